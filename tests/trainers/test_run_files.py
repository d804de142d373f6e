"""The run files a restart touches: metrics.jsonl keeps one row per step, and the final
model folder is replaced whole."""

import json
import os

import pytest

from storage import DataRoot, InputError
from storage.published import replace_dir
from trainers.config import TrainConfig
from trainers.run_files import last_logged_row, truncate_metrics


def test_truncate_metrics_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 8)]
    path.write_text("".join(rows) + '{"step": 8, "lo')  # a writer killed mid-line
    truncate_metrics(str(path), 5)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    truncate_metrics(str(path), 0)  # restarted before the first checkpoint: nothing stays
    assert path.read_text() == ""
    truncate_metrics(str(tmp_path / "absent.jsonl"), 3)  # a fresh run has none
    assert not (tmp_path / "absent.jsonl").exists()


def test_last_logged_row_is_the_last_whole_row_of_the_tail(tmp_path):
    root = DataRoot.resolve(str(tmp_path))
    run = root.path("runs", "r")
    assert last_logged_row(root, run) is None  # before the first step
    os.makedirs(run)
    path = os.path.join(run, "metrics.jsonl")
    with open(path, "w") as f:
        f.write("".join(json.dumps({"step": s, "loss": 1.0 / s, "task": "t" * 50}) + "\n" for s in range(1, 500)))
    assert os.path.getsize(path) > 8192  # only the tail is read
    assert last_logged_row(root, run)["step"] == 499
    with open(path, "a") as f:
        f.write('{"step": 500, "lo')  # a row still being written
    assert last_logged_row(root, run)["step"] == 499
    with open(path, "w") as f:
        f.write('{"step": 1, "lo')
    assert last_logged_row(root, run) is None


def test_replace_dir_publishes_the_new_folder_whole(tmp_path):
    final, staged = tmp_path / "model", tmp_path / ".model.partial"
    final.mkdir()
    (final / "old.safetensors").write_text("old")
    (final / "config.json").write_text("old")
    staged.mkdir()
    (staged / "config.json").write_text("new")
    replace_dir(str(staged), str(final))
    assert sorted(os.listdir(final)) == ["config.json"] and (final / "config.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model"]  # neither the staged nor the old folder is left


def test_max_failures_is_validated():
    assert TrainConfig().max_failures == 3
    assert TrainConfig(max_failures=-1).max_failures == -1
    with pytest.raises(InputError, match="max_failures must be -1"):
        TrainConfig(max_failures=-2)


def test_placement_is_one_of_rays_strategies():
    assert TrainConfig().placement == "PACK"
    with pytest.raises(InputError, match="placement must be one of PACK, SPREAD"):
        TrainConfig(placement="spread-out")
