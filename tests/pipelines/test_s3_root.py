"""The whole pipeline with ``--root s3://...`` against an S3-compatible server on loopback
(moto), run as a user runs it: one ``quarry`` process per command, from an empty folder."""

import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import yaml

from pipelines.cli import main
from storage import DataRoot
from storage.published import MARKER

pytestmark = pytest.mark.integration  # starts Ray or child processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_config(path, run_name: str) -> str:
    with open(os.path.join(REPO, "configs", "train", "tiny-decoder.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg.update(run_name=run_name, max_steps=6, checkpoint_every=2, global_batch=8)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def _metrics(root: DataRoot, run: str) -> list[dict]:
    text = root.read_bytes(root.path("runs", run, "metrics.jsonl")).decode()
    return [json.loads(line) for line in text.splitlines()]


def _weights(root: DataRoot, run: str) -> dict:
    from safetensors.numpy import load

    folder = root.path("models", run)
    out = {}
    for info in root.list_dir(folder):
        if info.base_name.endswith(".safetensors"):
            out.update({f"{info.base_name}:{k}": v for k, v in load(root.read_bytes(info.path)).items()})
    return out


def test_quarry_run_train_resume_eval_query_verify_on_s3(s3_root, tmp_path, capsys):
    work, cache, configs = tmp_path / "cwd", tmp_path / "cache", tmp_path / "configs"
    for d in (work, configs):
        d.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="qs")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, QUARRY_RAY_CPUS="2", QUARRY_RAY_TMP=ray_tmp, QUARRY_CACHE=str(cache))
    env["PYTHONPATH"] = REPO

    def quarry(*args):
        # cwd is an empty folder: nothing may land in a local ./quarry-data.
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--root", s3_root, *args], env=env, cwd=work,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
        return proc

    # The main job, as the docs submit it to a cluster: build, tasks, mine, export, train, eval, report.
    run = quarry("run", "--limit", "60", "--train-config", _tiny_config(configs / "s3.yaml", "s3-run"))
    assert "the trained model" in run.stdout and "report: s3://" in run.stdout, run.stdout[-3000:]
    # 60 articles leave the classification task without a test example: eval says so and goes on.
    assert "eval: leaving out vital-topic-classification: no examples in the test split" in run.stderr
    # A second run of the same name: the same schedule, stopped after a checkpoint, then resumed.
    half = _tiny_config(configs / "half.yaml", "s3-half")
    quarry("train", "--config", half, "--stop-after", "3")
    quarry("train", "--config", half, "--resume")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert os.listdir(work) == []

    root = DataRoot.resolve(s3_root)
    full = _metrics(root, "s3-run")
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6]
    resumed = _metrics(root, "s3-half")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]  # step 3 ran twice, logged once
    assert np.allclose([r["loss"] for r in resumed], [r["loss"] for r in full], atol=1e-4)
    a, b = _weights(root, "s3-half"), _weights(root, "s3-run")
    assert a.keys() == b.keys() and a and all(np.allclose(a[k], b[k], atol=1e-4) for k in a)
    # Ray Train's checkpoints, the logs, the report, the published models: all on the store.
    runs = root.path("runs", "s3-run")
    names = {i.base_name for i in root.list_dir(runs)}
    assert {"metrics.jsonl", "tb", "report.md", "eval.png", "loss.png"} <= names, names
    assert any(n.startswith("checkpoint_") for n in names), names
    for model in ("s3-run", "s3-half", "_tiny-mistral"):
        assert root.exists(root.path("models", model, MARKER)), model
    assert root.exists(root.path("models", "s3-run", "eval.json"))
    # Only the local cache holds copies (models for loading, the rank-0 logs).
    assert os.path.isdir(cache)

    # The rest starts no Ray: in this process (the fixture's credentials are in its environment).
    assert main(["--root", s3_root, "verify", "shards", "vital-stage1"]) == 0
    assert "match their recorded size and sha256" in capsys.readouterr().out
    # Retrieval tasks: positive-aware where the teacher ranks the positive first (the
    # default), so every negative with a threshold scores at most that threshold.
    assert main(["--root", s3_root, "query", "select count(*) n, min(threshold is null or neg_score <= threshold + 1e-6) ok "
                 "from negatives where task = 'vital-desc2article'", "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])  # JSON lines
    assert row["n"] > 0 and row["ok"] is True
    assert main(["--root", s3_root, "query", "select count(distinct model) n from evals", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["n"] == 2  # teacher and trained model
    assert main(["--root", s3_root, "datasets"]) == 0
    listing = capsys.readouterr().out
    for kind in ("corpus", "examples", "embeddings", "negatives", "rejections", "shards", "evals"):
        assert kind in listing
    # A run name on the root encodes with that model (copied once into the local cache).
    texts, out = tmp_path / "texts.txt", tmp_path / "vectors.parquet"
    texts.write_text("Paris\nthe capital of France\n")
    assert main(["--root", s3_root, "encode", "--model", "s3-run", "--input", str(texts), "--out", str(out)]) == 0
    assert "wrote 2 embeddings" in capsys.readouterr().out
    # A model folder without its marker (an upload cut short) is never taken as a model.
    root.fs.delete_file(posixpath.join(root.path("models", "s3-half"), MARKER))
    child = configs / "child.yaml"
    child.write_text(yaml.safe_dump({**yaml.safe_load(open(half)), "run_name": "s3-child", "init_from": "s3-half"}))
    assert main(["--root", s3_root, "train", "--config", str(child)]) == 2
    assert "init_from: no saved model named s3-half under s3://" in capsys.readouterr().err
