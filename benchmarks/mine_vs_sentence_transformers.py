"""Quarry mine vs sentence-transformers' mine_hard_negatives, same teacher, same settings.

    python benchmarks/mine_vs_sentence_transformers.py [--limit N] [--fixed-batches] [--precisions fp32,bf16]
        [--st-precisions fp32,bf16] [--encode-in auto,actors]

Task: the embedded vital articles, query = description, positive = the article's text,
candidates = every article (both tools get the same cleaned texts). Teacher: the packaged
all-MiniLM-L6-v2. Settings: relative margin 0.05 = topk_perc_pos 0.95, 5 negatives, depth
50, exact FAISS; each tool at its default batching (sentence-transformers: 32 texts per
forward pass; Quarry: a padded-token budget). Runs, in this one process: (a)
sentence-transformers at each of ``--st-precisions`` (bf16: the model loaded in bfloat16,
``model_kwargs={"dtype": torch.bfloat16}``, as a user who knows would run it), (b) Quarry cold (empty embedding cache) at each teacher
precision, (c) Quarry warm (same inputs again: cache hit), and with --fixed-batches (d)
Quarry cold with the token budget off (64 texts per pass), to show what the budget buys.
Prints wall times, their ratios, peak memory, the per-query Jaccard overlap of the
negative sets with sentence-transformers' (with the reason for every disagreement) and
with Quarry's own fp32 negatives, and the teacher's nDCG@10 on the test split at each
precision (``quarry eval`` on the vectors each mine cached), so that a faster teacher is
not silently a worse one. A benchmark, not a test: record the figures and the machine in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("QUARRY_PROGRESS", "0")

import psutil  # noqa: E402

from miners.select import SelectionConfig  # noqa: E402
from miners.teacher import TeacherSpec  # noqa: E402
from pipelines.builders.corpus import WikiBuildConfig, build_wiki  # noqa: E402
from pipelines.builders.sources import SourceConfig  # noqa: E402
from pipelines.builders.task_spec import parse_task_set  # noqa: E402
from pipelines.builders.tasks import build_tasks  # noqa: E402
from pipelines.evaluate import EvalConfig, evaluate  # noqa: E402
from pipelines.mine import MineConfig, mine  # noqa: E402
from pipelines.runtime.local_ray import ensure_ray  # noqa: E402
from storage import Catalog  # noqa: E402

SPEC = {"name": "bench", "corpus": "bench", "tasks": [{
    "name": "desc2article", "type": "retrieval", "source": {"corpus": "bench"},
    "columns": {"query": "description", "positive_ids": "doc_id", "id": "doc_id"}}]}


class PeakRSS:
    """Peak resident memory of this process, or of its whole process tree (Ray included)."""

    def __init__(self, tree: bool):
        self.tree, self.peak, self._stop = tree, 0, threading.Event()

    def _rss(self) -> int:
        me = psutil.Process()
        procs = [me] + (me.children(recursive=True) if self.tree else [])
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self):
        self.start = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def build_inputs(catalog: Catalog, limit: int | None, source: SourceConfig | None = None) -> None:
    """corpus/bench and examples/bench (the desc2article task) in ``catalog``, from the
    embedded English articles unless ``source`` says otherwise."""
    build_wiki(WikiBuildConfig(name="bench", source=source or SourceConfig(limit=limit)), catalog)
    build_tasks(parse_task_set(SPEC), catalog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="first N articles only (quick check)")
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--st-precisions", default="fp32,bf16",
                        help="sentence-transformers' precisions, the first is the reference (default %(default)s)")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="teacher precisions to mine cold at, the first is the reference (default %(default)s)")
    parser.add_argument("--encode-in", default="auto",
                        help="where Quarry encodes (auto, driver, actors); after the first, each is timed cold "
                             "again at the last precision on a data root of its own (default %(default)s)")
    parser.add_argument("--fixed-batches", action="store_true",
                        help="also time Quarry cold with --max-batch-tokens 0, on a second data root")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="quarry-mine-bench-")
    catalog = Catalog(root)
    t = time.perf_counter()
    ensure_ray()
    ray_start = time.perf_counter() - t
    build_inputs(catalog, args.limit)
    corpus = catalog.read_table("corpus", "bench").to_pylist()
    examples = catalog.read_table("examples", "bench").to_pylist()
    text_of = {r["doc_id"]: r["text"] for r in corpus}
    anchors = [e["query"] for e in examples]
    positives = [text_of[e["positive_ids"][0]] for e in examples]
    print(f"{len(examples)} queries, {len(corpus)} candidate documents; Ray start {ray_start:.1f} s", flush=True)

    # (a) sentence-transformers, model load included.
    import datasets
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import mine_hard_negatives

    from storage import resolve_packaged

    st_runs = {}
    for precision in args.st_precisions.split(","):
        kwargs = {"dtype": torch.bfloat16} if precision == "bf16" else {}
        with PeakRSS(tree=False) as mem:
            t = time.perf_counter()
            model = SentenceTransformer(resolve_packaged(TeacherSpec().teacher), device="cpu", model_kwargs=kwargs)
            out = mine_hard_negatives(
                datasets.Dataset.from_dict({"query": anchors, "positive": positives}), model,
                corpus=[r["text"] for r in corpus], range_max=args.depth, relative_margin=0.05,
                num_negatives=args.negatives, sampling_strategy="top", use_faiss=True,
                output_format="n-tuple", verbose=False)  # batch_size: its default, 32
            st_runs[precision] = (time.perf_counter() - t, mem, out)
        print(f"sentence-transformers {precision}: {st_runs[precision][0]:.1f} s", flush=True)
        del model
    st_precisions = list(st_runs)
    st_time, _, st_out = st_runs[st_precisions[0]]

    # (b) Quarry cold at each precision: each has its own cache (the precision is in its key)
    # and its own negatives name (so no run reuses another's searches); (c) warm and deep
    # from the cache at the last precision.
    precisions = args.precisions.split(",")
    selection = SelectionConfig(strategy="topk_perc_pos", margin=0.95, num_negatives=args.negatives,
                                confident_within=None)  # the threshold on every query, as sentence-transformers
    class_selection = SelectionConfig(strategy="topk", num_negatives=args.negatives)

    def config(name: str, precision: str, depth: int) -> MineConfig:
        return MineConfig(examples="bench", name=name, depth=depth, selection=selection,
                          class_selection=class_selection, teacher=TeacherSpec(precision=precision),
                          encode_in=args.encode_in.split(",")[0])

    runs = {}
    plan = [(f"cold {p}", config(f"bench-{p}", p, args.depth)) for p in precisions]
    # sentence-transformers searches range_max + (most positives of any query) deep and
    # picks among the first range_max survivors; Quarry at that depth, from the cache.
    deep = args.depth + max(Counter(anchors).values())
    plan += [("warm", config(f"bench-{precisions[-1]}", precisions[-1], args.depth)),
             ("deep", config("bench-deep", precisions[-1], deep))]
    for label, cfg in plan:
        with PeakRSS(tree=True) as mem:
            t = time.perf_counter()
            result = mine(cfg, catalog)
            runs[label] = (time.perf_counter() - t, mem, result)
        print(f"quarry {label}: {runs[label][0]:.1f} s (embedded {result.embed_stats.embedded}, "
              f"token budget {result.embed_stats.max_batch_tokens})", flush=True)
    ndcg = {}
    for p in precisions:
        scored = evaluate(EvalConfig(models=[TeacherSpec().teacher], examples="bench", split="test", precision=p,
                                     write=False), catalog)
        ndcg[p] = scored.models[0].value("desc2article", "ndcg_at_10")
        print(f"teacher at {p}: nDCG@10 {ndcg[p]:.4f} on the test split", flush=True)
    placements = args.encode_in.split(",")
    elsewhere = {}
    for placement in placements[1:]:
        other = Catalog(tempfile.mkdtemp(prefix=f"quarry-mine-bench-{placement}-"))
        build_inputs(other, args.limit)
        cfg = config(f"bench-{placement}", precisions[-1], args.depth)
        with PeakRSS(tree=True) as mem:
            t = time.perf_counter()
            mine(dataclasses.replace(cfg, encode_in=placement), other)
            elsewhere[placement] = (time.perf_counter() - t, mem)
        print(f"quarry cold {precisions[-1]}, --encode-in {placement}: {elsewhere[placement][0]:.1f} s", flush=True)
    fixed = None
    if args.fixed_batches:
        other = Catalog(tempfile.mkdtemp(prefix="quarry-mine-bench-fixed-"))
        build_inputs(other, args.limit)
        t = time.perf_counter()
        mine(MineConfig(examples="bench", depth=args.depth, selection=selection, class_selection=class_selection,
                        max_batch_tokens=0, teacher=TeacherSpec(precision=precisions[-1])), other)
        fixed = time.perf_counter() - t
        print(f"quarry cold, token budget off (64 texts per pass): {fixed:.1f} s", flush=True)

    neg_cols = [c for c in st_out.column_names if c.startswith("negative")]

    def st_sets_of(out) -> dict:
        return {(r["query"], r["positive"]): {r[c] for c in neg_cols} for r in out}

    st_sets = st_sets_of(st_out)
    overlap = {label: compare(catalog, runs[label][2], examples, text_of, anchors, st_sets, args.negatives)
               for label in (f"cold {precisions[-1]}", "deep")}
    reference = f"cold {precisions[0]}"
    agreement = {label: own_agreement(catalog, runs[reference][2], runs[label][2])
                 for label in runs if label.startswith("cold ") and label != reference}
    st_s, (warm_s, warm_mem, _) = st_time, runs["warm"]
    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}")
    print(f"{'run':28} {'seconds':>8} {'ratio':>7} {'peak RSS':>10}")
    for precision, (seconds, mem, out) in st_runs.items():
        sets = st_sets_of(out)
        keys = sorted(set(st_sets) | set(sets))
        jaccard = sum(len(st_sets.get(k, set()) & sets.get(k, set())) / max(1, len(st_sets.get(k, set())
                                                                                | sets.get(k, set())))
                      for k in keys) / len(keys)
        same = f"; its negatives vs ST {st_precisions[0]}: mean Jaccard {jaccard:.4f}" if precision != st_precisions[0] \
            else ""
        print(f"{'sentence-transformers ' + precision:28} {seconds:8.1f} {seconds / st_s:7.2f} "
              f"{mem.peak / 2**30:8.2f} GiB  (this process){same}")
    for p in precisions:
        cold_s, cold_mem, _ = runs[f"cold {p}"]
        same = f"; against ST at {p}: {cold_s / st_runs[p][0]:.2f}" if p in st_runs else ""
        print(f"{'quarry mine, cold, ' + p:28} {cold_s:8.1f} {cold_s / st_s:7.2f} {cold_mem.peak / 2**30:8.2f} GiB  "
              f"(process tree: driver + Ray); teacher nDCG@10 {ndcg[p]:.4f}{same}")
    for placement, (seconds, mem) in elsewhere.items():
        print(f"{'quarry cold, ' + precisions[-1] + ', ' + placement:28} {seconds:8.1f} {seconds / st_s:7.2f} "
              f"{mem.peak / 2**30:8.2f} GiB  (--encode-in {placement})")
    print(f"{'quarry mine, warm (cache)':28} {warm_s:8.1f} {warm_s / st_s:7.2f} {warm_mem.peak / 2**30:8.2f} GiB")
    if fixed is not None:
        print(f"{'quarry cold, no token budget':28} {fixed:8.1f} {fixed / st_s:7.2f}")
    print(f"cold/warm speed-up: {cold_s / warm_s:.1f}x ({precisions[-1]}); warm vs ST: {st_s / warm_s:.1f}x; "
          f"Ray start-up (not included above): {ray_start:.1f} s")
    for label, (jaccards, why) in overlap.items():
        depth = runs[label][2].report["desc2article"].depth
        identical = sum(1 for j in jaccards if j == 1.0)
        print(f"negative sets vs ST, Quarry depth {depth}: mean Jaccard {sum(jaccards) / len(jaccards):.4f}; "
              f"identical for {identical} of {len(jaccards)} queries; where they differ:")
        for reason, n in why.most_common():
            print(f"  {n:6d}  {reason}")
    for label, (mean, identical, total) in agreement.items():
        print(f"negative sets, quarry {label} vs quarry {reference}: mean Jaccard {mean:.4f}; identical for "
              f"{identical} of {total} queries; nDCG@10 {ndcg[label[5:]] - ndcg[precisions[0]]:+.4f}")


def own_agreement(catalog, reference, other) -> tuple[float, int, int]:
    """Mean per-query Jaccard of two Quarry runs' negative sets, identical sets, queries."""
    def sets(result) -> dict[str, set]:
        out: dict[str, set] = defaultdict(set)
        rows = catalog.read_table("negatives", result.negatives.name, result.negatives.version,
                                  columns=["example_id", "neg_id"]).to_pylist()
        for r in rows:
            out[r["example_id"]].add(r["neg_id"])
        return out

    a, b = sets(reference), sets(other)
    queries = sorted(set(a) | set(b))
    jaccards = [len(a[q] & b[q]) / len(a[q] | b[q]) for q in queries]
    return sum(jaccards) / len(jaccards), sum(1 for j in jaccards if j == 1.0), len(queries)


def compare(catalog, result, examples, text_of, anchors, st_sets, num_negatives):
    """Per-query Jaccard of the two negative sets, and the reason for each difference."""
    q_neg = catalog.read_table("negatives", result.negatives.name, result.negatives.version).to_pylist()
    rejected = catalog.read_table("rejections", result.rejections.name, result.rejections.version,
                                  columns=["example_id", "cand_text", "reason"]).to_pylist()
    reason_of = {(r["example_id"], r["cand_text"]): r["reason"] for r in rejected}
    by_example = {e["example_id"]: e for e in examples}
    quarry_sets: dict[tuple, set] = defaultdict(set)
    for r in q_neg:
        e = by_example[r["example_id"]]
        quarry_sets[(e["query"], text_of[e["positive_ids"][0]])].add(r["neg_text"])
    text_count = Counter(anchors)
    jaccards, why = [], Counter()
    for e in examples:
        key = (e["query"], text_of[e["positive_ids"][0]])
        a, b = st_sets.get(key, set()), quarry_sets.get(key, set())
        j = len(a & b) / len(a | b) if a | b else 1.0
        jaccards.append(j)
        if j == 1.0:
            continue
        if text_count[e["query"]] > 1:
            why["queries: text shared with other queries (ST merges them into one multi-positive query "
                "and thresholds on the lowest of all their positives)"] += 1
        elif not a:
            why["queries: ST found too few negatives and dropped the query"] += 1
        elif len(b) < num_negatives:
            why["queries: Quarry found fewer eligible candidates in its top-k than ST in its deeper search"] += 1
        else:
            for neg in a - b:
                reason = reason_of.get((e["example_id"], neg))
                why[f"negatives: ST's, rejected by Quarry as {reason}" if reason else
                    "negatives: ST's, ranked below Quarry's picks (score ties or float differences)"] += 1
    return jaccards, why


if __name__ == "__main__":
    main()
