"""Mining at scale without the teacher: synthetic vectors in a real embedding cache.

    python benchmarks/scale.py --passages 1000000 [--queries N] [--indexes flat,ivf,hnsw]
    python benchmarks/scale.py --passages 200000 --indexes flat --edit 0.05 [--recall-sample 0]

Builds a corpus of N synthetic passages and a retrieval task with one query per passage
(its positive) through the real build stages (a JSONL files source), then writes the
vectors of every text into the teacher's embedding cache as a real cache version:
passages are unit vectors around ``--clusters`` random centres (cosine about 0.7 to their
centre, about 0.5 to the other passages of their cluster, about 0 to the rest: topics, as
real embeddings have them; ``--clusters 0`` gives structureless random vectors, on which
no approximate index finds neighbours), and each query is its positive's vector plus
noise (cosine about 0.8 to it), so the positive-aware threshold has work to do. ``quarry mine`` then
runs for real and finds every text cached: loading, index, search, selection, writing,
report. Per index kind it prints the time between the mine's log lines (its stages) and
the peak PSS of the process tree (benchmarks/mine_memory.py's sampler); and the recall@depth
of IVF and HNSW against flat on a sample of queries.

``--edit F`` then edits the source as a weekly refresh would: 3F/5 of the passages change
text, F/5 are deleted, F/5 are added (``--edit 0.05``: 3%, 1%, 1%), rebuilds the corpus and
the task, caches synthetic vectors for the new texts (the same centres), and times the
re-mine of the flat run (which updates stored candidate lists, pipelines/mine/lists.py)
against a ``--no-reuse`` mine of the same data, whose negatives and rejections it checks
equal row for row.

Hours at a million passages, so resumable: ``--root DIR`` keeps the data root in DIR and
records each finished step (inputs, each cold mine, the edit, the re-mine, the reference)
in DIR/scale/results.jsonl; run again with the same flags, it skips what is recorded (a
step that was interrupted runs again). ``--until cold`` stops after the cold mines, so the
steps can be timed in separate sittings, each with nothing else running.

    python benchmarks/scale.py --passages 1000000 --indexes flat --recall-sample 0 --edit 0.05 \
        --root /data/scale-1m --until cold       # then the same without --until

A benchmark, not a test: record the figures and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QUARRY_PROGRESS", "0")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import results_log  # noqa: E402
from mine_memory import GIB, Sampler  # noqa: E402
from mine_vs_sentence_transformers import build_inputs  # noqa: E402

from miners.cache import EmbeddingCache, embeddings_table  # noqa: E402
from miners.index import IndexConfig, Searcher  # noqa: E402
from miners.teacher import TeacherSpec, cache_key, resolve_teacher  # noqa: E402
from pipelines.builders.sources import SourceConfig  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.runtime.local_ray import ensure_ray  # noqa: E402
from storage import Catalog  # noqa: E402

DEPTH = 50
WRITE_ROWS = 100_000


class Timeline(logging.Handler):
    """The quarry log's lines with the seconds since the previous one: the mine's stages."""

    def __init__(self, sampler: Sampler):
        super().__init__()
        self.sampler, self.lines, self.last = sampler, [], time.perf_counter()

    def emit(self, record: logging.LogRecord) -> None:
        now = time.perf_counter()
        message = record.getMessage()
        self.lines.append((now - self.last, message[:100]))
        self.last = now
        self.sampler.stage = message[:90]


def write_source(root: str, n: int) -> str:
    path = os.path.join(root, "passages.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"title": f"Passage {i}", "text": f"Synthetic passage number {i}, about topic {i % 97}.",
                                "description": f"What does synthetic passage {i} say?"}) + "\n")
    return path


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill_cache(catalog: Catalog, dim: int, clusters: int, seed: int) -> int:
    """The teacher's cache, holding a vector for every text the mine will ask for: those it
    lacks are made (all of them, the first time; after an edit, the new texts')."""
    teacher = resolve_teacher(TeacherSpec())
    corpus = catalog.read_table("corpus", "bench", columns=["doc_id", "text"])
    examples = catalog.read_table("examples", "bench", columns=["query", "positive_ids"])
    cache = EmbeddingCache(catalog, teacher.cache_name, dim=dim, config={**teacher.provenance(), "synthetic": True})
    known = cache.known_keys() if catalog.latest("embeddings", teacher.cache_name) else set()
    doc_keys = [cache_key(t) for t in corpus.column("text").to_pylist()]
    fresh_docs = np.array([k not in known for k in doc_keys])
    rng = np.random.default_rng(seed)
    centres = unit(np.random.default_rng(seed + 1).standard_normal((max(clusters, 1), dim), dtype=np.float32))
    doc_vectors = np.zeros((corpus.num_rows, dim), np.float32)
    noise = unit(rng.standard_normal((int(fresh_docs.sum()), dim), dtype=np.float32))
    doc_vectors[fresh_docs] = unit(centres[rng.integers(0, clusters, len(noise))] + noise) if clusters else noise
    if (~fresh_docs).any():
        doc_vectors[~fresh_docs] = cache.load([k for k, f in zip(doc_keys, fresh_docs) if not f])
    row_of = {d: i for i, d in enumerate(corpus.column("doc_id").to_pylist())}
    query_keys = [cache_key(q) for q in examples.column("query").to_pylist()]
    fresh_queries = np.array([k not in known for k in query_keys], dtype=bool)
    positives = np.array([row_of[p[0]] for p in examples.column("positive_ids").to_pylist()])[fresh_queries]
    noise = unit(rng.standard_normal((len(positives), dim), dtype=np.float32))
    query_vectors = unit(doc_vectors[positives] + 0.75 * noise)
    keys = [k for k, f in zip(doc_keys, fresh_docs) if f] + [k for k, f in zip(query_keys, fresh_queries) if f]
    vectors = np.concatenate([doc_vectors[fresh_docs], query_vectors])
    keys, first = np.unique(np.array(keys), return_index=True)  # a text shared by two rows is one entry
    vectors = vectors[first]

    def stage(writer) -> int:
        for i in range(0, len(keys), WRITE_ROWS):
            writer.write_table(embeddings_table(keys[i:i + WRITE_ROWS].tolist(), vectors[i:i + WRITE_ROWS]))
        return len(keys)

    cache.append(stage, {"texts": len(keys), "cached": 0, "embedded": len(keys), "synthetic": True})
    return len(keys)


def recall(catalog: Catalog, kinds: list[str], sample: int, seed: int) -> tuple[dict[str, float], float, int]:
    """recall@DEPTH of each approximate index against flat, on ``sample`` queries; also the
    seconds flat took to search that sample, and the sample's size. At 1M passages a full
    flat mine is N^2 (hours on 2 cores): its search time is projected from this sample."""
    teacher = resolve_teacher(TeacherSpec())
    cache = EmbeddingCache(catalog, teacher.cache_name, dim=None, config={})
    corpus = catalog.read_table("corpus", "bench", columns=["text"]).column("text").to_pylist()
    queries = catalog.read_table("examples", "bench", columns=["query"]).column("query").to_pylist()
    picked = np.random.default_rng(seed).choice(len(queries), size=min(sample, len(queries)), replace=False)
    docs = cache.load([cache_key(t) for t in corpus])
    q = cache.load([cache_key(queries[i]) for i in picked])
    flat = Searcher(docs, IndexConfig(kind="flat"))
    t = time.perf_counter()
    _, exact = flat.search(q, DEPTH)
    flat_s = time.perf_counter() - t
    del flat
    out = {}
    for kind in kinds:
        if kind == "flat":
            continue
        _, found = Searcher(docs, IndexConfig(kind=kind)).search(q, DEPTH)
        out[kind] = float(np.mean([len(set(a) & set(b)) / DEPTH for a, b in zip(exact, found)]))
    return out, flat_s, len(picked)


def edit_source(root: str, n: int, fraction: float, seed: int) -> dict[str, int]:
    """Rewrite the source as an edit of ``fraction`` of it: 3/5 changed, 1/5 deleted, 1/5 added."""
    rng = np.random.default_rng(seed + 2)
    roll = rng.random(n)
    changed, deleted = roll < 0.6 * fraction, (roll >= 0.6 * fraction) & (roll < 0.8 * fraction)
    added = int(round(0.2 * fraction * n))
    path = os.path.join(root, "passages.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in list(np.flatnonzero(~deleted)) + list(range(n, n + added)):
            text = f"Synthetic passage number {i}, about topic {i % 97}." + (" Edited this week." if i < n and
                                                                             changed[i] else "")
            f.write(json.dumps({"title": f"Passage {i}", "text": text,
                                "description": f"What does synthetic passage {i} say?"}) + "\n")
    return {"changed": int(changed.sum()), "deleted": int(deleted.sum()), "added": added}


def timed_mine(catalog: Catalog, cfg: MineConfig):
    """A mine with its seconds, peak PSS and log lines (its stages)."""
    with Sampler() as sampler:
        timeline = Timeline(sampler)
        logging.getLogger("quarry").addHandler(timeline)
        t = time.perf_counter()
        result = mine(cfg, catalog)
        seconds = time.perf_counter() - t
        logging.getLogger("quarry").removeHandler(timeline)
    return result, seconds, sampler, timeline


def same_rows(catalog: Catalog, a: str, b: str) -> bool:
    """negatives and rejections of ``a`` and ``b`` equal row for row (run ids aside)."""
    for kind, rank in (("negatives", "neg_rank"), ("rejections", "cand_rank")):
        tables = []
        for name in (a, b):
            t = catalog.read_table(kind, name).drop_columns(["run_id"])
            tables.append(t.sort_by([("task", "ascending"), ("example_id", "ascending"), (rank, "ascending")]))
        if not tables[0].equals(tables[1]):
            return False
    return True


def edit_step(catalog: Catalog, root: str, args) -> dict:
    edit = edit_source(root, args.passages, args.edit, args.seed)
    t = time.perf_counter()
    build_inputs(catalog, None, SourceConfig(kind="files", paths=[os.path.join(root, "passages.jsonl")],
                                             columns={"description": "description"}))
    rebuilt = time.perf_counter() - t
    added = fill_cache(catalog, args.dim, args.clusters, args.seed)
    print(f"\nedit: {edit}; corpus and task rebuilt in {rebuilt:.1f} s; {added} new synthetic vectors cached", flush=True)
    return {**edit, "rebuilt_s": round(rebuilt, 1), "cached": added}


def mine_step(catalog: Catalog, name: str, label: str, **cfg) -> dict:
    """One timed mine: its seconds, peak PSS and stages, printed and returned."""
    result, seconds, sampler, timeline = timed_mine(catalog, MineConfig(examples="bench", name=name, depth=DEPTH,
                                                                        **cfg))
    print(f"\n{label}: {seconds:.1f} s, peak PSS {sampler.total_peak_pss / GIB:.2f} GiB during: "
          f"{sampler.stage_at_peak}")
    for gap, line in timeline.lines:
        print(f"  {gap:8.1f} s  then: {line}")
    print(f"  {time.perf_counter() - timeline.last:8.1f} s  to the end (report, summary)", flush=True)
    return {"seconds": round(seconds, 1), "peak_pss_gib": round(sampler.total_peak_pss / GIB, 2),
            "negatives": result.negatives.num_rows, "stages": [[round(g, 1), line] for g, line in timeline.lines]}


def edit_table(done: dict[str, dict]) -> None:
    cold = done["cold-flat"]["seconds"]
    reference = done["reference"]["seconds"]
    print("\n| step | seconds | of the cold mine | of the --no-reuse mine | peak PSS |\n|---|---:|---:|---:|---:|")
    for step, label in (("cold-flat", "cold mine"), ("re-mine", "re-mine (stored lists)"),
                        ("reference", "--no-reuse reference")):
        row = done[step]
        print(f"| {label} | {row['seconds']:.1f} | {row['seconds'] / cold:.3f} | {row['seconds'] / reference:.3f} | "
              f"{row['peak_pss_gib']:.2f} GiB |")
    print(f"re-mine negatives and rejections equal the --no-reuse reference: {done['compare']['equal']}")


STEPS = ("inputs", "cold", "edit", "re-mine", "reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--indexes", default="flat,ivf,hnsw")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000, help="centres the passages gather around; 0: none")
    parser.add_argument("--recall-sample", type=int, default=2000, help="queries recall is measured on; 0: skip it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--edit", type=float, help="after the cold mines, edit this fraction of the source and "
                                                     "time the flat re-mine against --no-reuse (e.g. 0.05)")
    parser.add_argument("--root", help="keep the data root here and resume in it: a step recorded in "
                                       "ROOT/scale/results.jsonl is not run again (default: a new temporary root)")
    parser.add_argument("--until", choices=STEPS, help="stop after this step (run the rest later with the same --root)")
    args = parser.parse_args()
    kinds = args.indexes.split(",")
    if args.edit and "flat" not in kinds:
        parser.error("--edit re-mines the flat run: --indexes must include flat")

    root = args.root or tempfile.mkdtemp(prefix="quarry-scale-")
    os.makedirs(root, exist_ok=True)
    catalog = Catalog(root)
    settings = {k: getattr(args, k) for k in ("passages", "dim", "clusters", "seed", "edit")}
    done = {r["step"]: r for r in results_log.results(catalog, "scale")}
    if done and done.get("inputs", {}).get("settings") != settings:
        parser.error(f"--root {root} holds a run with other settings ({done.get('inputs', {}).get('settings')}); "
                     "use another root")
    print(f"data root: {root}", flush=True)
    ensure_ray()
    logging.getLogger("quarry").setLevel(logging.INFO)  # the mines' stages, timed between their log lines

    def step(name: str, run) -> bool:
        """Run ``name`` unless recorded; False once --until is passed."""
        if name not in done:
            done[name] = {"step": name, **run()}
            results_log.record(catalog, "scale", done[name])
        return args.until != name

    if not step("inputs", lambda: inputs_step(catalog, root, args, settings)):
        return
    for kind in kinds:
        step(f"cold-{kind}", lambda kind=kind: mine_step(catalog, f"bench-{kind}", f"{kind}, cold",
                                                         index=IndexConfig(kind=kind), reuse=False))
    cold_summary(catalog, args, kinds, done)
    if args.until == "cold" or not args.edit:
        return
    if not (step("edit", lambda: edit_step(catalog, root, args))
            and step("re-mine", lambda: mine_step(catalog, "bench-flat", "re-mine (stored lists)", reuse=True))
            and step("reference", lambda: mine_step(catalog, "bench-reference", "--no-reuse reference",
                                                    reuse=False))):
        return
    step("compare", lambda: {"equal": same_rows(catalog, "bench-flat", "bench-reference")})
    edit_table(done)


def inputs_step(catalog: Catalog, root: str, args, settings: dict) -> dict:
    t = time.perf_counter()
    path = write_source(root, args.passages)
    build_inputs(catalog, None, SourceConfig(kind="files", paths=[path], columns={"description": "description"}))
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    cached = fill_cache(catalog, args.dim, args.clusters, args.seed)
    fill_s = time.perf_counter() - t
    print(f"built corpus and task in {build_s:.1f} s; cached {cached} synthetic vectors in {fill_s:.1f} s", flush=True)
    return {"settings": settings, "build_s": round(build_s, 1), "fill_s": round(fill_s, 1), "cached": cached}


def cold_summary(catalog: Catalog, args, kinds: list[str], done: dict[str, dict]) -> None:
    recalls, flat_s, sampled = recall(catalog, kinds, args.recall_sample, args.seed) if args.recall_sample \
        else ({}, None, 0)
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / GIB:.0f} GiB, "
          f"Python {platform.python_version()}")
    print(f"{args.passages} passages around {args.clusters} centres, as many queries, dim {args.dim}, depth {DEPTH}")
    print(f"{'index':6} {'seconds':>8} {'peak PSS':>9} {'negatives':>10} {'recall@' + str(DEPTH):>10}")
    for kind in kinds:
        row = done[f"cold-{kind}"]
        recall_at = recalls.get(kind, 1.0 if kind == "flat" else None)
        print(f"{kind:6} {row['seconds']:8.1f} {row['peak_pss_gib']:7.2f} GiB {row['negatives']:10d} "
              f"{'-' if recall_at is None else format(recall_at, '.4f'):>10}")
    if flat_s is not None:
        queries = catalog.manifest("examples", "bench").num_rows
        print(f"flat search of the {sampled} sampled queries over {args.passages} passages: {flat_s:.1f} s; "
              f"all {queries} queries at that rate: {flat_s * queries / sampled:.0f} s (the search alone)")


if __name__ == "__main__":
    main()
