"""quarry export-model: a model saved in the legacy convention, rewritten so that plain
sentence-transformers loads it, with its vectors checked and its drift reported."""

import json

import numpy as np
import pytest

from pipelines.cli import main
from storage import PACKAGED_MINILM, resolve_packaged
from trainers import EmbeddingModel
from trainers.convert import PROBES, convert

MINILM = resolve_packaged(PACKAGED_MINILM)
INSTRUCTION = "Instruct: Given a claim, retrieve documents that support it\nQuery: "


def _legacy(path, mode):
    """A folder as an older Quarry wrote it: no convention in its config, Quarry's module."""
    import torch

    model = EmbeddingModel.from_pretrained(MINILM, pooling=mode, max_length=48)
    model.config.convention = "quarry"
    model.config.prompts = {"claims-query": INSTRUCTION}
    legacy = EmbeddingModel(model.backbone, model.tokenizer, model.config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in legacy.pooler.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    legacy.save_pretrained(str(path))
    config = json.loads((path / "quarry_embedding.json").read_text())
    del config["convention"]
    (path / "quarry_embedding.json").write_text(json.dumps(config))
    return legacy


@pytest.mark.parametrize("mode", ["weighted_mean", "latent_attention"])
def test_a_legacy_model_converts_and_loads_in_plain_sentence_transformers(tmp_path, mode):
    from sentence_transformers import SentenceTransformer

    legacy = _legacy(tmp_path / "old", mode)
    report = convert(str(tmp_path / "old"), str(tmp_path / "new"))
    assert report.form == ("latent" if mode == "latent_attention" else "standard")
    assert report.st_gap <= 1e-5 and (report.texts, report.prompts) == (len(PROBES), 1)
    new = EmbeddingModel.from_pretrained(str(tmp_path / "new"))
    assert new.config.convention == "sentence-transformers" and new.config.prompts == legacy.config.prompts
    st = SentenceTransformer(str(tmp_path / "new"), device="cpu", trust_remote_code=mode == "latent_attention")
    texts = list(PROBES)
    assert np.abs(st.encode(texts, prompt_name="claims-query") - new.encode(texts, INSTRUCTION)).max() <= 1e-5
    # The drift reported is the drift there is: same weights, other tokens pooled.
    old = legacy.encode(texts)
    assert 0 < report.drift == pytest.approx(max(np.abs(old - new.encode(texts)).max(),
                                                 np.abs(legacy.encode(texts, INSTRUCTION)
                                                        - new.encode(texts, INSTRUCTION)).max()), abs=1e-6)
    assert report.min_cosine < 1.0
    assert not (tmp_path / "new.partial").exists()


def test_the_command_prints_what_it_checked(tmp_path, capsys):
    _legacy(tmp_path / "old", "mean")
    (tmp_path / "texts.txt").write_text("first text\nsecond text\n\n")
    assert main(["--root", str(tmp_path / "root"), "export-model", str(tmp_path / "old"), str(tmp_path / "new"),
                 "--texts", str(tmp_path / "texts.txt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'new'} (standard sentence-transformers folder): on 2 texts x 2 prompts, "
                          "sentence-transformers matches Quarry to ")
    assert "least cosine" in out
