"""lineage.json: what a model was made from, and the chain back to its base backbone."""

import os

import numpy as np
import pytest
import torch

from storage import PACKAGED_MINILM, Catalog, DataRoot, InputError, resolve_packaged
from trainers.lineage import LINEAGE_FILE, Lineage, chain, format_chain, read_lineage


def _record(model, parent=None, steps=4, shards="shards/vital-stage1 v0001"):
    return Lineage(model=model, backbone="packaged:all-MiniLM-L6-v2", parent=parent,
                   parent_fingerprint="abc" if parent else None, shards=shards,
                   inputs=("examples/vital v0001", "negatives/vital v0001"), steps=steps, trained_at="2026-11-23")


def _save(root: DataRoot, record: Lineage) -> None:
    folder = root.path("models", record.model)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LINEAGE_FILE), "w") as f:
        f.write(record.to_json())


def test_the_chain_runs_back_to_the_base_backbone(tmp_path):
    root = DataRoot.resolve(str(tmp_path))
    _save(root, _record("week1"))
    _save(root, _record("week2", parent="week1", shards="shards/vital-stage1 v0002"))
    _save(root, _record("week3", parent="week2", steps=2, shards="shards/vital-stage1 v0003"))
    records = chain(root, "week3")
    assert [r.model for r in records] == ["week3", "week2", "week1"]
    assert read_lineage(root, "week2") == _record("week2", parent="week1", shards="shards/vital-stage1 v0002")
    text = format_chain("week3", records)
    assert text.splitlines()[0] == ("week3: 2 steps on shards/vital-stage1 v0003 (examples/vital v0001, "
                                    "negatives/vital v0001), from week2")
    assert text.splitlines()[-1].strip() == "<- packaged:all-MiniLM-L6-v2 (base backbone)"
    # a folder works as well as a run name
    assert [r.model for r in chain(root, root.path("models", "week2"))] == ["week2", "week1"]


def test_a_parent_without_a_record_ends_the_chain_and_a_cycle_stops(tmp_path):
    root = DataRoot.resolve(str(tmp_path))
    _save(root, _record("child", parent="gone"))
    text = format_chain("child", chain(root, "child"))
    assert text.splitlines()[-1].strip() == "<- gone: no lineage recorded"
    _save(root, _record("a", parent="b"))
    _save(root, _record("b", parent="a"))
    assert [r.model for r in chain(root, "a")] == ["a", "b"]
    os.makedirs(root.path("models", "plain"))
    assert "no lineage recorded" in format_chain("plain", chain(root, "plain"))
    with pytest.raises(InputError, match="no saved model named nope"):
        chain(root, "nope")
    with open(os.path.join(root.path("models", "a"), LINEAGE_FILE), "w") as f:
        f.write("{not json")
    with pytest.raises(InputError, match="lineage.json: not a lineage record"):
        chain(root, "a")


def test_init_from_starts_from_the_parents_weights(tmp_path):
    """The training path (resolve_backbone, build_embedding_model) with a fresh LoRA encodes exactly as
    the parent did, before the first step."""
    from pipelines.train.launch import resolve_backbone
    from trainers import EmbeddingModel, LoraSettings, TrainConfig
    from trainers.objectives import build_embedding_model

    catalog = Catalog(str(tmp_path))
    torch.manual_seed(0)
    parent = EmbeddingModel.from_pretrained(resolve_packaged(PACKAGED_MINILM), pooling="mean", max_length=32,
                                            lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # a trained adapter: not the identity
        for name, p in parent.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)
    parent.save_pretrained(catalog.root.path("models", "parent"))
    texts = ["The cat sat on the mat.", "Paris", "Quantum chromodynamics describes the strong force."]
    expected = parent.encode(texts)
    cfg = TrainConfig(run_name="child", init_from="parent", max_length=32, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    backbone = resolve_backbone(cfg, catalog)
    assert backbone.local == catalog.root.path("models", "parent") and backbone.on_root is None
    child = build_embedding_model(cfg, backbone.local).eval()
    assert any(p.requires_grad for n, p in child.named_parameters() if "lora_" in n)  # a fresh LoRA to train
    assert np.allclose(child.encode(texts), expected, atol=1e-5)
    with pytest.raises(InputError, match="init_from: no saved model named missing under "):
        resolve_backbone(TrainConfig(init_from="missing"), catalog)
