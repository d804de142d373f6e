"""benchmarks/gpu_check.py, the one command for the GPU figures, runs where the GPU machines
run it: without Ray, FAISS or DuckDB. Here those are made unimportable and every step runs
at its tiny CPU shape (--smoke), so a module-level import of any of them in the GPU tests,
the two benchmarks or what they import fails this test."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # child processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSENT_ON_THE_GPU_MACHINE = ("ray", "faiss", "duckdb")


def test_every_step_runs_without_ray_faiss_or_duckdb(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ABSENT_ON_THE_GPU_MACHINE:
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not installed on the GPU machine')\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(blocked)}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--out", str(out),
                           "--smoke"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    records = json.loads((out / "gpu_check.json").read_text())
    assert records["smoke"] is True
    for name in ABSENT_ON_THE_GPU_MACHINE:  # the block held: nothing below used them
        assert records["env"][name] is None
    tests = records["tests"]
    # Collected and either run (on a GPU) or skipped for want of one; none failed.
    assert tests["failed"] == 0 and tests["passed"] + tests["skipped"] >= 20
    teacher = records["teacher"]
    assert teacher["passages"] == 200 and teacher["lowest_cosine"] > 0.99  # both sides encode alike
    assert teacher["quarry"]["tokens_per_s"] > 0 and teacher["sentence_transformers"]["tokens_per_s"] > 0
    train = records["train"]
    assert [r["checkpointing"] for r in train] == ["on", "off"]
    assert all(r["step_ms"] > 0 and "error" not in r for r in train)
    table = (out / "gpu_check.md").read_text()
    assert all(f"| {step} | " in table for step in ("env", "tests", "teacher", "train"))
