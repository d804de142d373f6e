"""TrainConfig: every value checked against its field's type; errors name the file and field."""

import glob
import os

import pytest

from pipelines.train.launch import load_train_config
from storage import InputError
from trainers.config import LoraSettings, PoolingConfig, TrainConfig

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "train")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))))
def test_every_shipped_config_loads(path):
    cfg = load_train_config(path)
    assert isinstance(cfg.pooling, PoolingConfig) and isinstance(cfg.lora, LoraSettings)


def test_nested_sections_and_shorthands():
    cfg = TrainConfig.from_dict({"pooling": "mean", "lora": None, "lr": "1e-4", "grad_clip": None})
    assert cfg.pooling == PoolingConfig(mode="mean") and cfg.lora is None
    assert cfg.lr == 1e-4  # PyYAML reads 1e-4 (no dot) as text; it is still a number
    cfg = TrainConfig.from_dict({"pooling": {"num_latents": 16, "num_heads": 4}, "lora": {"r": 4, "targets": ["q"]}})
    assert cfg.pooling.num_latents == 16 and cfg.pooling.mode == "latent_attention"
    assert cfg.lora == LoraSettings(r=4, alpha=32, dropout=0.1, targets=["q"])
    assert cfg.total_steps(100) == 100 and TrainConfig(max_steps=7).total_steps(100) == 7
    assert TrainConfig(epochs=3).total_steps(10) == 30
    assert TrainConfig(max_length=64).saved_max_length == 64
    assert TrainConfig(max_length=64, encode_max_length=128).saved_max_length == 128
    with pytest.raises(InputError, match="encode_max_length must be at least 1"):
        TrainConfig(encode_max_length=0)


@pytest.mark.parametrize("raw, message", [
    ({"lr": "x"}, "c.yaml: lr: expected a number, got 'x'"),
    ({"use_gpu": "false"}, "c.yaml: use_gpu: expected true or false, got 'false'"),
    ({"num_workers": 2.5}, "c.yaml: num_workers: expected an integer, got 2.5"),
    ({"num_workers": True}, "c.yaml: num_workers: expected an integer, got True"),
    ({"bf16": "yes"}, "c.yaml: bf16: expected true or false or null, got 'yes'"),
    ({"lora": {"r": "big"}}, "c.yaml: lora.r: expected an integer, got 'big'"),
    ({"lora": {"rank": 4}}, "c.yaml: lora.rank: unknown field"),
    ({"lora": {"targets": "q_proj"}}, "c.yaml: lora.targets: expected a list of strings or null, got 'q_proj'"),
    ({"pooling": {"mode": "max"}}, "c.yaml: unknown pooling 'max'"),
    ({"pooling": 3}, "c.yaml: pooling: expected a mapping of settings, got 3"),
    ({"num_latents": 64}, "c.yaml: num_latents: unknown field"),
    ({"run_name": None}, "c.yaml: run_name: must be set, got null"),
    ({"lr": -1}, "c.yaml: lr must be positive, got -1.0"),
    ({"global_batch": 15}, "c.yaml: global_batch 15 must be a positive multiple of num_workers 2"),
    ({"attn_implementation": "flash"}, "c.yaml: attn_implementation must be one of eager, sdpa, flash_attention_2"),
])
def test_bad_values_are_one_line_errors(raw, message):
    with pytest.raises(InputError) as info:
        TrainConfig.from_dict(raw, where="c.yaml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_config_files_that_are_not_text_or_not_a_mapping(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run_name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.yaml: not UTF-8 text \(at byte offset 13\)"):
        load_train_config(str(latin1))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="expected a mapping of training settings"):
        load_train_config(str(listing))
    with pytest.raises(InputError, match="no such training config"):
        load_train_config(str(tmp_path))


def test_matryoshka_sizes_always_include_the_full_dimension():
    cfg = TrainConfig.from_dict({"matryoshka_dims": [64, 32], "matryoshka_weights": [0.5, 2]})
    assert cfg.matryoshka(384) == ((32, 2.0), (64, 0.5), (384, 1.0))
    assert TrainConfig.from_dict({"matryoshka_dims": [384, 64]}).matryoshka(384) == ((64, 1.0), (384, 1.0))
    assert TrainConfig().matryoshka(384) == ()
    with pytest.raises(InputError, match=r"matryoshka_dims \[512\] exceed the embedding's 384 dimensions"):
        TrainConfig.from_dict({"matryoshka_dims": [64, 512]}).matryoshka(384)


@pytest.mark.parametrize("raw, message", [
    ({"matryoshka_dims": [64, 64]}, "matryoshka_dims must be distinct positive sizes"),
    ({"matryoshka_dims": [64], "matryoshka_weights": [1, 2]}, "one positive weight per dimension"),
    ({"matryoshka_weights": [1.0]}, "matryoshka_weights needs matryoshka_dims"),
    ({"matryoshka_dims": ["64"]}, "matryoshka_dims: expected a list of integers or null"),
    ({"objective": "mlm"}, "objective must be one of contrastive, mntp, simcse"),
    ({"objective": "mntp", "global_batch": 8, "pooling": "mean"}, "trains on corpus passages: set corpus"),
    ({"objective": "simcse", "corpus": "c", "pooling": "mean"}, "set global_batch"),
    ({"objective": "mntp", "corpus": "c", "global_batch": 8, "pooling": "mean", "matryoshka_dims": [8]},
     "objective mntp makes no embeddings to nest"),
    ({"mntp": {"preset": "gpt"}}, "mntp.preset must be auto or one of llama, mistral"),
    ({"mntp": {"mask_probability": 0}}, "mntp.mask_probability must be in (0, 1]"),
    ({"simcse": {"dropout": 1.0}}, "simcse.dropout must be in [0, 1)"),
    ({"keep_layers": 1.0}, "keep_layers must be a positive number of layers or a fraction in (0, 1)"),
    ({"keep_layers": 0}, "keep_layers must be a positive number"),
])
def test_bad_new_fields_are_one_line_errors(raw, message):
    with pytest.raises(InputError) as e:
        TrainConfig.from_dict(raw, where="x.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mntp_presets_resolve_by_family():
    from trainers.config import MntpSettings

    assert MntpSettings().resolve("mistral") == MntpSettings(preset="mistral").resolve("llama")
    assert MntpSettings().resolve("llama").replacement == "bert" and MntpSettings().resolve("qwen2").mask_probability == 0.2
    assert MntpSettings(mask_probability=0.5).resolve("mistral").mask_probability == 0.5
