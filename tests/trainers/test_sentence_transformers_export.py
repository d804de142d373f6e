"""A saved Quarry model is a sentence-transformers model folder: SentenceTransformer(dir)
encodes exactly as EmbeddingModel.encode does, for every pooling mode and both families;
standard poolings name only sentence-transformers' modules, latent attention carries its
own code, and models of the legacy convention keep Quarry's module."""

import json
import logging

import numpy as np
import pytest

from storage import PACKAGED_MINILM, resolve_packaged
from trainers import EmbeddingModel, latent_attention
from trainers.config import POOLING_MODES
from trainers.st_files import HEAD_FILE, HEAD_TYPE
from trainers.tiny import build_tiny_decoder

MINILM = resolve_packaged(PACKAGED_MINILM)
TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics describes the strong force of nature.", "Paris", "x y"]
INSTRUCTION = "Instruct: Given the title of a Wikipedia article, retrieve the article\nQuery: "


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, wiki_texts):
    return build_tiny_decoder("llama", str(tmp_path_factory.mktemp("tiny") / "llama"), wiki_texts[:200])


def _perturb_pooler(model):
    import torch

    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.pooler.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # a trained head, not the init


@pytest.mark.parametrize("mode", POOLING_MODES)
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_sentence_transformers_encodes_exactly_as_quarry(mode, family, tiny_llama, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = EmbeddingModel.from_pretrained(MINILM if family == "bert" else tiny_llama, pooling=mode, max_length=96)
    _perturb_pooler(model)
    model.config.prompts = {"vital-title2article-query": INSTRUCTION}
    form = model.save_pretrained(str(tmp_path))
    assert form == ("latent" if mode == "latent_attention" else "standard")
    quarry = EmbeddingModel.from_pretrained(str(tmp_path))
    st = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=mode == "latent_attention")

    with_instruction = quarry.encode(TEXTS, instruction=INSTRUCTION)
    assert np.abs(st.encode(TEXTS, prompt=INSTRUCTION) - with_instruction).max() <= 1e-5
    assert np.abs(st.encode(TEXTS, prompt_name="vital-title2article-query") - with_instruction).max() <= 1e-5
    assert np.abs(st.encode(TEXTS) - quarry.encode(TEXTS)).max() <= 1e-5
    assert st.get_embedding_dimension() == quarry.pooler_dim()
    # the instruction is attended to (it changes the vector) but not pooled
    assert np.abs(with_instruction - quarry.encode(TEXTS)).max() > 1e-4


def test_standard_pooling_names_only_sentence_transformers_modules(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=32)
    model.config.prompts = {"t-query": INSTRUCTION}
    model.save_pretrained(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer",
                                            "sentence_transformers.models.Pooling",
                                            "sentence_transformers.models.Normalize"]
    pooling = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["include_prompt"] is False
    assert json.loads((tmp_path / "config_sentence_transformers.json").read_text())["prompts"] == {
        "t-query": INSTRUCTION}
    loaded = SentenceTransformer(str(tmp_path), device="cpu")  # no trust_remote_code
    assert loaded.max_seq_length == 32
    # the [CLS] pooler Quarry leaves out is not rebuilt at random (and reported missing) either
    assert loaded[0].auto_model.pooler is None


def test_latent_attention_carries_the_code_quarry_runs(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = EmbeddingModel.from_pretrained(MINILM, pooling="latent_attention", max_length=32)
    assert isinstance(model.pooler.latent, latent_attention.LatentAttention)
    model.save_pretrained(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer", HEAD_TYPE]
    with open(latent_attention.__file__, "rb") as f:
        assert (tmp_path / HEAD_FILE).read_bytes() == f.read()
    assert not (tmp_path / "pooling.pt").exists()  # the head's weights are stored once, in its module
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(tmp_path), device="cpu")


def _legacy_folder(path, mode="mean"):
    """A folder as Quarry wrote it before the sentence-transformers convention."""
    model = EmbeddingModel.from_pretrained(MINILM, pooling=mode, max_length=32)
    model.config.convention = "quarry"
    legacy = EmbeddingModel(model.backbone, model.tokenizer, model.config)
    legacy.save_pretrained(str(path))
    config = json.loads((path / "quarry_embedding.json").read_text())
    del config["convention"]
    (path / "quarry_embedding.json").write_text(json.dumps(config))
    return legacy


def test_a_legacy_model_still_loads_and_keeps_quarrys_module(tmp_path, caplog):
    from sentence_transformers import SentenceTransformer

    with caplog.at_level(logging.INFO, logger="quarry"):
        legacy = _legacy_folder(tmp_path)
    assert "through Quarry's own module only, because it uses the 'quarry' tokenization convention" in caplog.text
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "trainers.st_module.QuarryEncoder"}]
    reloaded = EmbeddingModel.from_pretrained(str(tmp_path))
    assert reloaded.config.convention == "quarry"
    assert np.abs(reloaded.encode(TEXTS, INSTRUCTION) - legacy.encode(TEXTS, INSTRUCTION)).max() <= 1e-6
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(tmp_path), device="cpu")
    st = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=True)
    assert np.abs(st.encode(TEXTS) - reloaded.encode(TEXTS)).max() <= 1e-5


def test_reloading_a_saved_encoder_reports_no_missing_pooler(tmp_path, caplog):
    """Quarry removes BERT's [CLS] pooler on purpose: reloading must not warn about it."""
    EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=32).save_pretrained(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        model = EmbeddingModel.from_pretrained(str(tmp_path))
    assert model.backbone.pooler is None
    assert "pooler" not in caplog.text and "MISSING" not in caplog.text


def test_a_matryoshka_prefix_is_the_same_in_quarry_and_sentence_transformers(tmp_path):
    from sentence_transformers import SentenceTransformer

    model = EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=64)
    model.save_pretrained(str(tmp_path))
    full = model.encode(TEXTS)
    small = model.encode(TEXTS, dim=64)
    assert small.shape == (len(TEXTS), 64) and np.allclose(np.linalg.norm(small, axis=1), 1.0, atol=1e-5)
    expected = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert np.abs(small - expected).max() <= 1e-6
    st = SentenceTransformer(str(tmp_path), device="cpu", truncate_dim=64)
    assert np.abs(st.encode(TEXTS, normalize_embeddings=True) - small).max() <= 1e-5
    with pytest.raises(Exception, match="dim 500: this model's embeddings have 384 dimensions"):
        model.encode(TEXTS, dim=500)
