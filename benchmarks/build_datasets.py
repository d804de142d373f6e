"""Time building the full embedded corpus and the vital task datasets.

    python benchmarks/build_datasets.py [--root DIR] [--limit N]

Prints rows/second for each stage. A benchmark, not a test: record the figures and the
machine in docs/benchmarks.md. Each stage runs twice: cold (new data root) and warm (the
same inputs again, which the catalog recognises as unchanged).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.sources import SourceConfig  # noqa: E402
from pipelines.builders.task_spec import load_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.runtime.local_ray import ensure_ray  # noqa: E402
from storage import Catalog  # noqa: E402

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tasks", "vital.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="data root (default: a fresh temporary folder)")
    parser.add_argument("--limit", type=int, help="first N articles only")
    args = parser.parse_args()
    os.environ.setdefault("QUARRY_PROGRESS", "0")
    root = args.root or tempfile.mkdtemp(prefix="quarry-bench-")
    catalog = Catalog(root)
    t0 = time.perf_counter()
    ensure_ray()
    print(f"ray start: {time.perf_counter() - t0:.1f} s")
    spec = load_task_set(SPEC)
    results = []
    for attempt in ("cold", "warm"):
        t = time.perf_counter()
        wiki = build_wiki(WikiBuildConfig(name="vital", source=SourceConfig(limit=args.limit)), catalog)
        wiki_s = time.perf_counter() - t
        t = time.perf_counter()
        tasks = build_tasks(spec, catalog, limit=args.limit)
        tasks_s = time.perf_counter() - t
        results.append((attempt, "build wiki", wiki.manifest.stats["rows_in"], wiki.manifest.num_rows, wiki_s, wiki.unchanged))
        rows_in = sum(s["rows_in"] for s in tasks.manifest.stats["tasks"].values())
        results.append((attempt, "build tasks", rows_in, tasks.manifest.num_rows, tasks_s, tasks.unchanged))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'run':5} {'stage':12} {'rows in':>8} {'rows out':>8} {'seconds':>8} {'rows/s':>8}  unchanged")
    for attempt, stage, rows_in, rows_out, secs, unchanged in results:
        print(f"{attempt:5} {stage:12} {rows_in:8d} {rows_out:8d} {secs:8.1f} {rows_in / secs:8.0f}  {unchanged}")
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
