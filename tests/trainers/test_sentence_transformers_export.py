"""A saved Quarry model is a sentence-transformers model folder: SentenceTransformer(dir)
encodes exactly as EmbeddingModel.encode does, for every pooling mode and both families."""

import json
import logging

import numpy as np
import pytest

from storage import PACKAGED_MINILM, resolve_packaged
from trainers import EmbeddingModel
from trainers.config import POOLING_MODES
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
    model.save_pretrained(str(tmp_path))
    quarry = EmbeddingModel.from_pretrained(str(tmp_path))
    st = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=True)

    with_instruction = quarry.encode(TEXTS, instruction=INSTRUCTION)
    assert np.abs(st.encode(TEXTS, prompt=INSTRUCTION) - with_instruction).max() <= 1e-5
    assert np.abs(st.encode(TEXTS, prompt_name="vital-title2article-query") - with_instruction).max() <= 1e-5
    assert np.abs(st.encode(TEXTS) - quarry.encode(TEXTS)).max() <= 1e-5
    assert st.get_embedding_dimension() == quarry.pooler_dim()
    # the instruction is attended to (it changes the vector) but not pooled
    assert np.abs(with_instruction - quarry.encode(TEXTS)).max() > 1e-4


def test_saved_folder_names_its_module_and_prompts(tmp_path):
    model = EmbeddingModel.from_pretrained(MINILM, pooling="latent_attention", max_length=32)
    model.config.prompts = {"t-query": INSTRUCTION}
    model.save_pretrained(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "trainers.st_module.QuarryEncoder"}]
    st_config = json.loads((tmp_path / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"t-query": INSTRUCTION}
    assert not (tmp_path / "1_Pooling").exists()


def test_without_trust_remote_code_sentence_transformers_refuses_in_one_line(tmp_path):
    from sentence_transformers import SentenceTransformer

    EmbeddingModel.from_pretrained(MINILM, pooling="mean", max_length=32).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(tmp_path), device="cpu")


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
    st = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=True, truncate_dim=64)
    assert np.abs(st.encode(TEXTS, normalize_embeddings=True) - small).max() <= 1e-5
    with pytest.raises(Exception, match="dim 500: this model's embeddings have 384 dimensions"):
        model.encode(TEXTS, dim=500)
