"""The data stages with ``--root s3://...`` against an S3-compatible server on loopback
(moto), run as a user runs them: one ``quarry`` process per command."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from pipelines.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_build_mine_export_query_verify_on_s3(s3_root, tmp_path, capsys):
    ray_tmp = tempfile.mkdtemp(prefix="qs")  # short: Ray's socket paths have a length limit
    env = dict(os.environ, QUARRY_RAY_CPUS="2", QUARRY_RAY_TMP=ray_tmp)
    env["PYTHONPATH"] = REPO

    def quarry(*args):
        # cwd is an empty folder: nothing may land in a local ./quarry-data.
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "--root", s3_root, *args], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)

    for args in (["build", "wiki", "--limit", "60"], ["build", "tasks", "--limit", "60"],
                 ["mine", "--tasks", "vital-desc2article", "--depth", "20"],
                 ["export", "--tasks", "vital-desc2article", "--global-batch", "8", "--workers", "2"]):
        proc = quarry(*args)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-3000:]}"
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert os.listdir(tmp_path) == []
    # The rest starts no Ray: in this process (the fixture's credentials are in its environment).
    assert main(["--root", s3_root, "verify", "shards", "vital-stage1"]) == 0
    assert "match their recorded size and sha256" in capsys.readouterr().out
    assert main(["--root", s3_root, "query", "select count(*) n, min(neg_score < positive_score) ok from negatives",
                 "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])  # JSON lines
    assert row["n"] > 0 and row["ok"] is True
    assert main(["--root", s3_root, "datasets"]) == 0
    listing = capsys.readouterr().out
    for kind in ("corpus", "examples", "embeddings", "negatives", "rejections", "shards"):
        assert kind in listing
    assert main(["--root", s3_root, "train", "--config", os.path.join(REPO, "configs", "train", "cpu-minilm.yaml")]) == 2
    assert "error: training writes checkpoints and the model under a local data root for now" in capsys.readouterr().err
