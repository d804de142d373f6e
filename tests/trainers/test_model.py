import numpy as np
import pytest
import torch

from storage import PACKAGED_MINILM, resolve_packaged
from trainers import EmbeddingModel, LoraSettings, PoolingConfig
from trainers.tiny import build_tiny_decoder

MINILM = resolve_packaged(PACKAGED_MINILM)
TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force.", "Paris"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory, wiki_texts):
    return build_tiny_decoder("mistral", str(tmp_path_factory.mktemp("tiny") / "m"), wiki_texts[:200])


def _perturb_trainable(model):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # as if trained: LoRA B is zero at init


def test_encoder_encode_is_normalised_and_round_trips(tmp_path):
    model = EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=64)
    out = model.encode(TEXTS, batch_size=2)
    assert out.shape == (3, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    model.save_pretrained(str(tmp_path))
    again = EmbeddingModel.from_pretrained(str(tmp_path))
    assert np.allclose(again.encode(TEXTS), out, atol=1e-5)


def test_instruction_changes_the_embedding_but_is_not_pooled():
    model = EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=64)
    plain = model.encode(["a text about birds"])
    with_ins = model.encode(["a text about birds"], instruction="Classify the topic: ")
    assert not np.allclose(plain, with_ins, atol=1e-4)  # the text tokens attended to the instruction
    batch = model.tokenize(["a text about birds"], "Classify the topic: ")
    n_text = len(model.tokenizer("a text about birds", add_special_tokens=False)["input_ids"])
    assert int(batch["embed_mask"].sum()) == n_text + 1  # the text and [SEP]


@pytest.mark.parametrize("merge", [True, False])
def test_decoder_with_lora_and_latent_pooling_round_trips(tiny_path, tmp_path, merge):
    torch.manual_seed(0)
    model = EmbeddingModel.from_pretrained(tiny_path, pooling=PoolingConfig(num_latents=16, num_heads=4),
                                           lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=32)
    assert hasattr(model.backbone, "peft_config") and model.config.is_decoder and model.config.add_eos
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(n.startswith("pooler.latent") for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    _perturb_trainable(model)
    out = model.encode(TEXTS)
    model.save_pretrained(str(tmp_path), merge_lora=merge)
    again = EmbeddingModel.from_pretrained(str(tmp_path))
    assert again.backbone.config.is_causal is False
    assert np.allclose(again.encode(TEXTS), out, atol=1e-4)
    assert (tmp_path / "adapter").is_dir() != merge


def test_stage_two_starts_from_a_saved_model_with_a_fresh_lora(tiny_path, tmp_path):
    torch.manual_seed(0)
    stage1 = EmbeddingModel.from_pretrained(tiny_path, pooling=PoolingConfig(num_latents=16, num_heads=4),
                                            lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=32)
    _perturb_trainable(stage1)
    stage1.save_pretrained(str(tmp_path))
    before = stage1.encode(TEXTS)
    stage2 = EmbeddingModel.from_pretrained(str(tmp_path), lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    assert hasattr(stage2.backbone, "peft_config")
    assert any(p.requires_grad for n, p in stage2.named_parameters() if "lora_" in n)
    # A fresh LoRA starts as the identity (B = 0): stage 2 begins exactly where stage 1 ended.
    assert np.allclose(stage2.encode(TEXTS), before, atol=1e-4)


@pytest.mark.parametrize("backbone", ["minilm", "tiny"])
def test_every_trainable_parameter_gets_a_gradient(backbone, tiny_path):
    """DDP fails on parameters that never receive a gradient (e.g. a LoRA on BERT's unused pooler)."""
    path = MINILM if backbone == "minilm" else tiny_path
    model = EmbeddingModel.from_pretrained(path, pooling=PoolingConfig(num_latents=16, num_heads=4),
                                           lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_length=32)
    model.train()
    emb = model(**model.tokenize(TEXTS, "Instruct: x\nQuery: "))
    (emb @ emb.T).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_a_causal_model_reloads_causal(tiny_path, tmp_path):
    """A model trained with ``bidirectional: false`` (last-token pooling, E5-mistral's way)
    is evaluated as saved: from_pretrained on the folder, as eval and encode call it."""
    model = EmbeddingModel.from_pretrained(tiny_path, pooling="last_token", bidirectional=False, max_length=32)
    model.save_pretrained(str(tmp_path))
    again = EmbeddingModel.from_pretrained(str(tmp_path))
    assert again.config.bidirectional is False and getattr(again.backbone.config, "is_causal", True) is not False
    batch = again.tokenize(["the river runs to the sea", "the river runs to the lake"])
    with torch.no_grad():
        states = again.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.allclose(states[0, 0], states[1, 0], atol=1e-6)  # the first token never sees the last
    assert np.allclose(again.encode(TEXTS), model.encode(TEXTS), atol=1e-5)
