"""Re-mining after a weekly edit vs a cold mine, on the full embedded vital articles.

    python benchmarks/remine.py [--edit 0.03 --add 0.01 --delete 0.01] [--root DIR] [--save-snapshot SNAP]
    python benchmarks/remine.py --from-snapshot SNAP [--repeat 3]

1. the English vital articles (10,033) as a JSONL files source, less the articles held
   back to be "added" later; ``quarry build wiki`` + ``build tasks`` (configs/tasks/vital.yaml);
2. a cold ``quarry mine`` (empty embedding cache): the baseline;
3. the edit, 5% of the articles by default: 3% get a sentence appended to their text, 1%
   are deleted, and the 1% held back are added;
4. ``quarry refresh``, then ``quarry mine`` again: the embedding cache supplies every
   unchanged text, the queries the edit cannot reach keep their negatives, and the drift
   report compares the negatives with the cold run's;
5. the reference: the same mine with every query searched again (``--no-reuse``, under
   another name), whose negatives and rejections must equal the re-mine's;
6. 4 and 5 again after a second, smaller edit (1% of the articles by default).

Prints the wall time of each step, the re-mine's ratio to the cold mine, what was
embedded, the change summaries and the drift table. Each mine runs in a fresh Python
process, as ``quarry mine`` does, so that every one pays its own imports (torch and
sentence-transformers when it encodes in the driver): in one process, a re-mine would
find them imported by the cold mine. Each process starts its own local Ray and waits
for it to settle before the clock starts; Ray's start-up is in no figure, and the build
and refresh steps run in this process on its own Ray, shut down while a mine runs.
Peak RSS is the whole process tree (Ray included).
``--save-snapshot SNAP`` copies the data root after the first refresh; ``--from-snapshot
SNAP`` then times that re-mine alone, on a fresh copy of the snapshot each time.
A benchmark, not a test: record the figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QUARRY_PROGRESS", "0")

from benchmarks.mine_vs_sentence_transformers import PeakRSS  # noqa: E402
from miners.teacher import TeacherSpec  # noqa: E402
from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.refresh import RefreshConfig, refresh  # noqa: E402
from pipelines.builders.sources import SourceConfig, load_embedded_table  # noqa: E402
from pipelines.builders.task_spec import load_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.mine import MineConfig  # noqa: E402
from pipelines.run import DEFAULT_TASK_SPEC  # noqa: E402
from pipelines.runtime.local_ray import ensure_ray  # noqa: E402
from storage import Catalog  # noqa: E402

COLUMNS = {"title": "title", "text": "extract", "description": "description", "topic": "topic"}
EDIT = " This sentence was appended by the weekly edit."


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def compare(catalog: Catalog, kind: str, a: str, b: str) -> str:
    """Two versions' rows, sorted: ids, texts, labels and reasons must match exactly; scores
    may differ in the last bits and two candidates whose scores tie to those bits may swap
    ranks (FAISS scores a batch of queries with one matrix product, whose rounding depends
    on which queries share the batch)."""
    import numpy as np
    import pyarrow as pa

    tables = [catalog.read_table(kind, n) for n in (a, b)]
    floats = [f.name for f in tables[0].schema if pa.types.is_floating(f.type)]
    ranks = [c for c in tables[0].column_names if c.endswith("_rank")]
    keys = [c for c in tables[0].column_names if c not in floats + ranks and c != "run_id"]
    x, y = (t.select(keys + ranks + floats).sort_by([(c, "ascending") for c in keys]) for t in tables)
    if x.select(keys) != y.select(keys):
        return "DIFFERENT"
    worst = max((float(np.nanmax(np.abs(x.column(c).to_numpy(zero_copy_only=False).astype(float)
                                        - y.column(c).to_numpy(zero_copy_only=False).astype(float)), initial=0))
                 for c in floats), default=0.0)
    swapped = sum(int(np.sum(x.column(c).to_numpy() != y.column(c).to_numpy())) for c in ranks)
    return f"identical ({x.num_rows} rows; scores within {worst:.1e}; {swapped} rank(s) swapped on such ties)"


# A mine in a fresh process: (config, data root, output path) in, (seconds, MineResult) out.
CHILD = """
import os, pickle, sys, time
sys.path.insert(0, {repo!r})
from pipelines.mine import mine
from pipelines.runtime.local_ray import ensure_ray
from storage import Catalog
cfg, root, out = pickle.load(open(sys.argv[1], "rb"))
ensure_ray()
time.sleep(8)  # Ray's idle workers finish starting before the clock does
start = time.perf_counter()
result = mine(cfg, Catalog(root))
seconds = time.perf_counter() - start
pickle.dump((seconds, result), open(out, "wb"))
"""


def mine_in_fresh_process(cfg: MineConfig, catalog: Catalog):
    """``mine(cfg, catalog)`` in a new interpreter; returns (its seconds, its MineResult)."""
    import pickle
    import subprocess

    import ray

    ray.shutdown()  # one local Ray at a time: the child starts its own
    with tempfile.TemporaryDirectory() as tmp:
        args, out = os.path.join(tmp, "args.pkl"), os.path.join(tmp, "out.pkl")
        with open(args, "wb") as f:
            pickle.dump((cfg, catalog.root.uri, out), f)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([sys.executable, "-c", CHILD.format(repo=repo), args], check=True)
        with open(out, "rb") as f:
            return pickle.load(f)


def timed_mine(label: str, cfg: MineConfig, catalog: Catalog, results: list):
    with PeakRSS(tree=True) as rss:
        seconds, value = mine_in_fresh_process(cfg, catalog)
    results.append((label, seconds, rss.peak))
    print(f"{label}: {seconds:.1f} s", flush=True)
    return value


def timed(label: str, fn, results: list):
    with PeakRSS(tree=True) as rss:
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
    results.append((label, seconds, rss.peak))
    print(f"{label}: {seconds:.1f} s", flush=True)
    return value


def _remine(catalog: Catalog, results: list, suffix: str, teacher: TeacherSpec, snapshot: str | None = None):
    """refresh, the re-mine, and the reference that searches every query again; ``snapshot``:
    where to copy the refreshed data root first."""
    ensure_ray()
    refreshed = timed(f"refresh{suffix}", lambda: refresh(RefreshConfig(), catalog), results)
    if snapshot:
        shutil.copytree(catalog.root.uri, snapshot)
        print(f"the refreshed data root, copied to {snapshot} (--from-snapshot {snapshot} times its re-mine)")
    again = timed_mine(f"re-mine{suffix}", MineConfig(examples="vital", teacher=teacher), catalog, results)
    # Another name, so its own previous run is not the re-mine's; the embedding cache is shared.
    timed_mine(f"re-mine{suffix}, every query searched (--no-reuse)",
               MineConfig(examples="vital", name="vital-full", reuse=False, teacher=teacher), catalog, results)
    same = {kind: compare(catalog, kind, "vital", "vital-full") for kind in ("negatives", "rejections")}
    return refreshed, again, same


def time_snapshot(snapshot: str, repeat: int, teacher: TeacherSpec) -> None:
    """The re-mine of a saved snapshot, ``repeat`` times, each on a fresh copy of it."""
    results: list = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "data")
            shutil.copytree(snapshot, root)
            again = timed_mine(f"re-mine of the snapshot, run {i + 1}", MineConfig(examples="vital", teacher=teacher),
                               Catalog(root), results)
    print(f"{again.embed_stats.summary()}; reuse {again.reuse}")
    print(" ".join(f"{s:.1f}" for _, s, _ in results), "s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--edit", type=float, default=0.03, help="fraction of articles whose text changes")
    p.add_argument("--add", type=float, default=0.01, help="fraction added (held back from the first build)")
    p.add_argument("--delete", type=float, default=0.01, help="fraction deleted")
    p.add_argument("--second-edit", type=float, default=0.01, help="then this fraction of other articles edited")
    p.add_argument("--root", help="data root (default: a fresh temporary folder)")
    p.add_argument("--precision", default="auto", help="teacher precision of every mine (default %(default)s)")
    p.add_argument("--save-snapshot", metavar="DIR",
                   help="copy the data root to DIR after the first refresh, before its re-mine")
    p.add_argument("--from-snapshot", metavar="DIR",
                   help="only time the re-mine of a saved snapshot, on a fresh copy of it each time")
    p.add_argument("--repeat", type=int, default=3, help="re-mines of --from-snapshot (default %(default)s)")
    args = p.parse_args()
    if args.save_snapshot and os.path.exists(args.save_snapshot):
        sys.exit(f"--save-snapshot: {args.save_snapshot} exists; name a new folder")
    if args.from_snapshot:
        if not os.path.isdir(os.path.join(args.from_snapshot, "negatives")):
            sys.exit(f"--from-snapshot: {args.from_snapshot} is not a data root saved by --save-snapshot")
        if args.repeat < 1:
            sys.exit(f"--repeat must be at least 1, got {args.repeat}")
        return time_snapshot(args.from_snapshot, args.repeat, TeacherSpec(precision=args.precision))

    work = args.root or tempfile.mkdtemp(prefix="quarry-remine-")
    os.makedirs(work, exist_ok=True)
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
    teacher = TeacherSpec(precision=args.precision)
    cold = timed_mine("cold mine", MineConfig(examples="vital", teacher=teacher), catalog, results)

    edited = [dict(r) for r in first]
    for r in edited[:n_edit]:
        r["extract"] = (r["extract"] or "") + EDIT
    edited = edited[:n_edit] + edited[n_edit + n_delete:] + held_back
    write_jsonl(docs, edited)
    weeks = [(f"{(n_edit + n_delete + n_add) / n:.0%} edit",
              *_remine(catalog, results, "", teacher, args.save_snapshot))]
    # A smaller edit of other articles: the share of queries it cannot reach grows as the edit shrinks.
    n_small = round(n * args.second_edit)
    for r in edited[n_edit:n_edit + n_small]:
        r["extract"] = (r["extract"] or "") + EDIT
    write_jsonl(docs, edited)
    weeks.append((f"{n_small} texts edited", *_remine(catalog, results, " (2)", teacher)))

    print()
    print(f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
          f"{n} articles, edit {n_edit} + delete {n_delete} + add {n_add} = {n_edit + n_delete + n_add} "
          f"({(n_edit + n_delete + n_add) / n:.1%}), then {n_small} more edited")
    print(f"cold mine: {cold.embed_stats.summary()}; teacher at {cold.precision}")
    for label, refreshed, again, same in weeks:
        print()
        print(f"{label}: {again.embed_stats.summary()}; reuse {again.reuse}")
        print(f"{label}: against every query searched again: negatives {same['negatives']}, "
              f"rejections {same['rejections']}")
        print(refreshed.summary())
        print(again.drift.summary() if again.drift else "no drift report")
    print()
    cold_s = next(s for label, s, _ in results if label == "cold mine")
    print("| step | seconds | vs the cold mine | peak RSS (GiB) |")
    print("|---|---:|---:|---:|")
    for label, seconds, peak in results:
        print(f"| {label} | {seconds:.1f} | {seconds / cold_s:.3f} | {peak / 2**30:.2f} |")


if __name__ == "__main__":
    main()
