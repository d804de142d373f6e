"""Re-mining after a weekly edit vs a cold mine, on the full embedded vital articles.

    python benchmarks/remine.py [--edit 0.03 --add 0.01 --delete 0.01] [--root DIR]

1. the English vital articles (10,033) as a JSONL files source, less the articles held
   back to be "added" later; ``quarry build wiki`` + ``build tasks`` (configs/tasks/vital.yaml);
2. a cold ``quarry mine`` (empty embedding cache): the baseline;
3. the edit, 5% of the articles by default: 3% get a sentence appended to their text, 1%
   are deleted, and the 1% held back are added;
4. ``quarry refresh``, then ``quarry mine`` again: the embedding cache supplies every
   unchanged text, and the drift report compares the negatives with the cold run's.

Prints the wall time of each step, the re-mine's ratio to the cold mine, what was
embedded, the change summaries and the drift table. Ray is started before the first
timing and is not in any figure. Peak RSS is the whole process tree (Ray included).
A benchmark, not a test: record the figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QUARRY_PROGRESS", "0")

from benchmarks.mine_vs_sentence_transformers import PeakRSS  # noqa: E402
from pipelines.main_job import DEFAULT_TASK_SPEC  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.ray_runtime import ensure_ray  # noqa: E402
from pipelines.refresh import RefreshConfig, refresh  # noqa: E402
from pipelines.sources import SourceConfig, load_embedded_table  # noqa: E402
from pipelines.task_spec import load_task_set  # noqa: E402
from pipelines.tasks import build_tasks  # noqa: E402
from pipelines.wiki import WikiBuildConfig, build_wiki  # noqa: E402
from storage import Catalog  # noqa: E402

COLUMNS = {"title": "title", "text": "extract", "description": "description", "topic": "topic"}
EDIT = " This sentence was appended by the weekly edit."


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def timed(label: str, fn, results: list):
    with PeakRSS(tree=True) as rss:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    results.append((label, seconds, rss.peak))
    print(f"{label}: {seconds:.1f} s", flush=True)
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edit", type=float, default=0.03, help="fraction of articles whose text changes")
    p.add_argument("--add", type=float, default=0.01, help="fraction added (held back from the first build)")
    p.add_argument("--delete", type=float, default=0.01, help="fraction deleted")
    p.add_argument("--root", help="data root (default: a fresh temporary folder)")
    args = p.parse_args()

    work = args.root or tempfile.mkdtemp(prefix="quarry-remine-")
    catalog = Catalog(os.path.join(work, "data"))
    if catalog.kinds():
        sys.exit(f"{catalog.root.uri} is not empty: the cold mine needs an empty embedding cache")
    rows = load_embedded_table("en", None).to_pylist()  # in a fixed hash order: slices are spread over topics
    n = len(rows)
    n_add, n_delete, n_edit = round(n * args.add), round(n * args.delete), round(n * args.edit)
    held_back, first = rows[:n_add], rows[n_add:]
    docs = os.path.join(work, "docs.jsonl")
    write_jsonl(docs, first)
    ensure_ray()
    source = SourceConfig(kind="files", paths=[docs], columns=COLUMNS)
    results: list = []
    timed("build wiki", lambda: build_wiki(WikiBuildConfig(name="vital", source=source), catalog), results)
    timed("build tasks", lambda: build_tasks(load_task_set(DEFAULT_TASK_SPEC), catalog), results)
    cold = timed("cold mine", lambda: mine(MineConfig(examples="vital"), catalog), results)

    edited = [dict(r) for r in first]
    for r in edited[:n_edit]:
        r["extract"] = (r["extract"] or "") + EDIT
    edited = edited[:n_edit] + edited[n_edit + n_delete:] + held_back
    write_jsonl(docs, edited)
    refreshed = timed("refresh", lambda: refresh(RefreshConfig(), catalog), results)
    again = timed("re-mine", lambda: mine(MineConfig(examples="vital"), catalog), results)

    print()
    print(f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
          f"{n} articles, edit {n_edit} + delete {n_delete} + add {n_add} = {n_edit + n_delete + n_add} "
          f"({(n_edit + n_delete + n_add) / n:.1%})")
    print(f"cold mine: {cold.embed_stats.summary()}")
    print(f"re-mine:   {again.embed_stats.summary()}")
    print()
    print(refreshed.summary())
    print()
    cold_s = next(s for label, s, _ in results if label == "cold mine")
    print("| step | seconds | vs the cold mine | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for label, seconds, peak in results:
        print(f"| {label} | {seconds:.1f} | {seconds / cold_s:.3f} | {peak / 2**30:.2f} |")
    print()
    print(again.drift.summary() if again.drift else "no drift report")


if __name__ == "__main__":
    main()
