"""``quarry mine``: hard negatives from a teacher retriever, as Ray stages.

embed (Ray Data actor pool, through the embedding cache) -> index and search (FAISS, in
batches) -> select (Ray Data map_batches over query chunks, the pure functions of
``miners.select``) -> write ``negatives/<name>`` and ``rejections/<name>`` with the report.

Candidate pools: retrieval tasks search the corpus their examples point into (the version
the examples were built from); classification and clustering tasks search their own
examples, so a negative is always another example, of another class.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.cache import EmbeddingCache
from miners.index import IndexConfig, Searcher
from miners.report import build_report, plot_scores, to_json
from miners.select import QueryFacts, SelectionConfig, normalized_query_key, select_for_query
from miners.teacher import TeacherSpec, describe, text_key
from pipelines.embed_stage import embed_missing
from pipelines.ray_io import block_sizes, write_blocks_ordered
from pipelines.ray_runtime import ensure_ray
from pipelines.task_spec import CLASS_TYPES
from storage import Catalog, InputError, Manifest, validate_name

log = logging.getLogger("quarry")

MINABLE = ("retrieval",) + CLASS_TYPES


@dataclass
class MineConfig:
    examples: str = "vital"
    examples_version: str | None = None
    tasks: tuple[str, ...] = ()  # empty: every retrieval, classification and clustering task
    name: str | None = None  # negatives dataset (default: the examples name)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # Classification and clustering: the label decides what is a false negative (the
    # same-class filter), and the positive is a random example of the class, so a
    # positive-aware threshold would only discard good negatives. Plain top-k by default.
    class_selection: SelectionConfig = field(default_factory=lambda: SelectionConfig(strategy="topk"))
    depth: int = 50
    index: IndexConfig = field(default_factory=IndexConfig)
    batch_size: int = 64  # most texts per teacher forward pass
    max_batch_tokens: int | None = None  # padded tokens per pass; None: the device default, 0: off
    query_prompt: str = ""  # fixed prefix for queries, e.g. "query: " for E5
    task_instructions: bool = False  # prefix queries with their task instruction (e5-mistral style)
    encoders: int | None = None  # actor pool size (default: one per GPU, or one CPU actor)
    chunk_rows: int = 2048  # queries per selection batch

    def __post_init__(self) -> None:
        validate_name(self.examples)
        if self.name:
            validate_name(self.name)
        if self.depth < 1:
            raise InputError(f"--depth must be at least 1, got {self.depth}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 0:
            raise InputError(f"--max-batch-tokens must be 0 (off) or positive, got {self.max_batch_tokens}")
        if self.class_selection.num_negatives != self.selection.num_negatives:
            raise InputError("class tasks and retrieval tasks must mine the same --num-negatives")
        if self.depth < self.selection.num_negatives:
            raise InputError(f"--depth {self.depth} is below --num-negatives {self.selection.num_negatives}")

    def selection_for(self, task_type: str) -> SelectionConfig:
        return self.class_selection if task_type in CLASS_TYPES else self.selection

    @property
    def output_name(self) -> str:
        return self.name or self.examples


@dataclass
class MineResult:
    negatives: Manifest
    rejections: Manifest
    report: dict
    embed_stats: dict
    run_id: str


@dataclass
class Pool:
    """Candidates of one search: corpus documents, or a class task's own examples."""

    name: str
    table: pa.Table  # id, text, hash, label
    vectors: np.ndarray | None = None

    @functools.cached_property
    def position(self) -> dict[str, int]:
        return {x: i for i, x in enumerate(self.table.column("id").to_pylist())}


NEGATIVE_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("neg_id", pa.string()),
    ("neg_text", pa.string()), ("neg_score", pa.float32()), ("neg_rank", pa.int32()), ("label", pa.string()),
    ("neg_label", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()), ("teacher", pa.string()),
    ("run_id", pa.string()),
])
REJECTION_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("cand_id", pa.string()),
    ("cand_text", pa.string()), ("cand_score", pa.float32()), ("cand_rank", pa.int32()), ("label", pa.string()),
    ("cand_label", pa.string()), ("reason", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()),
    ("teacher", pa.string()), ("run_id", pa.string()),
])
_SELECTED_SCHEMA = pa.schema([("row_kind", pa.string()), *NEGATIVE_SCHEMA, ("reason", pa.string())])


class _PyView:
    """Position -> Python value over an Arrow array, without converting the whole pool."""

    def __init__(self, column: pa.ChunkedArray | pa.Array):
        self.array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def __getitem__(self, position: int):
        return self.array[position].as_py()


def select_batch(batch: pa.Table, pools: dict, cfg: SelectionConfig, class_cfg: SelectionConfig, teacher: str,
                 run_id: str) -> pa.Table:
    """Selection for a batch of queries: one output row per chosen or rejected candidate.

    ``pools`` maps a pool name to its table (id, text, hash, label) or an ObjectRef of it;
    Arrow tables come out of Ray's object store without a copy.
    """
    import ray

    out: dict[str, list] = {f.name: [] for f in _SELECTED_SCHEMA}
    cols = {c: batch.column(c).to_pylist() for c in batch.column_names}
    views: dict[str, dict[str, _PyView]] = {}
    for i in range(batch.num_rows):
        pool_name = cols["pool"][i]
        if pool_name not in views:
            ref = pools[pool_name]
            table = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
            views[pool_name] = {c: _PyView(table.column(c)) for c in ("id", "text", "hash", "label")}
        pool = views[pool_name]
        facts = QueryFacts(example_id=cols["example_id"][i], positive_positions=cols["positive_positions"][i],
                           positive_scores=cols["positive_scores"][i], self_position=cols["self_position"][i],
                           label=cols["label"][i], cross_positive_positions=frozenset(cols["cross_positions"][i]))
        is_class = cols["task_type"][i] in CLASS_TYPES
        task_cfg = class_cfg if is_class else cfg
        sel = select_for_query(np.asarray(cols["cand_positions"][i]), np.asarray(cols["cand_scores"][i]), facts,
                               pool["hash"], pool["label"] if is_class else None, task_cfg)
        # The threshold is anchored on the lowest-scoring positive: that is the one reported.
        anchor = int(np.argmin(facts.positive_scores))
        anchor_id = pool["id"][facts.positive_positions[anchor]]
        rows = [("negative", p, s, r, None) for p, s, r in sel.chosen] + \
               [("rejected", p, s, r, why) for p, s, r, why in sel.rejected]
        threshold = sel.threshold if np.isfinite(sel.threshold) else None
        for kind, p, s, r, why in rows:
            values = (kind, cols["task"][i], cols["task_type"][i], facts.example_id, cols["query"][i], anchor_id,
                      facts.positive_scores[anchor], pool["id"][p], pool["text"][p], s, r, facts.label,
                      pool["label"][p], task_cfg.strategy, threshold, teacher, run_id, why)
            for name, value in zip(_SELECTED_SCHEMA.names, values):
                out[name].append(value)
    return pa.Table.from_pydict(out, schema=_SELECTED_SCHEMA)


_QUERY_SCHEMA = pa.schema([
    ("pool", pa.string()), ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()),
    ("query", pa.string()), ("label", pa.string()), ("positive_positions", pa.list_(pa.int64())),
    ("positive_scores", pa.list_(pa.float32())), ("self_position", pa.int64()),
    ("cand_positions", pa.list_(pa.int64())), ("cand_scores", pa.list_(pa.float32())),
    ("cross_positions", pa.list_(pa.int64())),
])


def query_string(cfg: MineConfig, instruction: str | None, query: str) -> str:
    """What the teacher encodes for a query: prompt, optional task instruction, text."""
    return cfg.query_prompt + ((instruction or "") if cfg.task_instructions else "") + query


def _choose_tasks(cfg: MineConfig, examples: pa.Table, name: str) -> list[tuple[str, str]]:
    types: dict[str, str] = {}
    for task, task_type in zip(examples.column("task").to_pylist(), examples.column("task_type").to_pylist()):
        types.setdefault(task, task_type)
    if cfg.tasks:
        for task in cfg.tasks:
            if task not in types:
                raise InputError(f"examples/{name} has no task {task!r} (tasks: {', '.join(types)})")
            if types[task] not in MINABLE:
                raise InputError(f"task {task} is a {types[task]} task: hard negatives are mined for "
                                 "retrieval, classification and clustering tasks")
        chosen = list(cfg.tasks)
    else:
        chosen = [t for t, ty in types.items() if ty in MINABLE]
        skipped = [t for t, ty in types.items() if ty not in MINABLE]
        if skipped:
            log.info("mine: no hard negatives for %s (sts/pair tasks)", ", ".join(skipped))
    if not chosen:
        raise InputError(f"examples/{name} has no retrieval, classification or clustering task to mine")
    return [(t, types[t]) for t in chosen]


def _corpus_pool(catalog: Catalog, ex_manifest: Manifest) -> tuple[Pool, Manifest]:
    corpus_name = ex_manifest.config.get("corpus")
    if not corpus_name:
        raise InputError(f"examples/{ex_manifest.name} {ex_manifest.version} does not name the corpus "
                         "its retrieval positives point into")
    version = next((i.version for i in ex_manifest.inputs if i.kind == "corpus" and i.name == corpus_name), None)
    corpus_m = catalog.manifest("corpus", corpus_name, version)
    corpus = catalog.read_table("corpus", corpus_name, corpus_m.version, columns=["doc_id", "text", "content_hash"])
    if corpus.num_rows == 0:
        raise InputError(f"corpus/{corpus_name} {corpus_m.version} is empty: nothing to mine from")
    table = pa.table({"id": corpus.column("doc_id"), "text": corpus.column("text"),
                      "hash": corpus.column("content_hash"), "label": pa.nulls(corpus.num_rows, pa.string())})
    return Pool("corpus", table), corpus_m


def _task_queries(task: str, task_type: str, rows: pa.Table, pool: Pool, q_vectors: np.ndarray,
                  searcher: Searcher, depth: int) -> tuple[pa.Table, dict]:
    """Search one task's queries and gather the facts selection needs, one row per query."""
    scores, cands = searcher.search(q_vectors, depth)
    ids = rows.column("example_id").to_pylist()
    queries = rows.column("query").to_pylist()
    labels = rows.column("label").to_pylist()
    positives = rows.column("positive_ids").to_pylist()
    positions = [[pool.position[p] for p in pids if p in pool.position] for pids in positives]
    # Queries with the same (normalised) text: each one's positives are false negatives for the others.
    same_text: dict[str, set[int]] = defaultdict(set)
    keys = [normalized_query_key(q) for q in queries]
    for key, pos in zip(keys, positions):
        same_text[key].update(pos)
    out: dict[str, list] = {f.name: [] for f in _QUERY_SCHEMA}
    info = {"type": task_type, "queries": len(ids), "skipped": defaultdict(int), "positive_scores": {}}
    for i, example_id in enumerate(ids):
        if not positions[i]:
            info["skipped"]["positive_not_in_pool"] += 1
            continue
        pos_scores = (pool.vectors[positions[i]] @ q_vectors[i]).astype(np.float32)
        info["positive_scores"][example_id] = float(pos_scores.min())
        values = (pool.name, task, task_type, example_id, queries[i], labels[i], positions[i], pos_scores.tolist(),
                  pool.position.get(example_id) if task_type in CLASS_TYPES else None, cands[i].tolist(),
                  scores[i].tolist(), sorted(same_text[keys[i]] - set(positions[i])))
        for name, value in zip(_QUERY_SCHEMA.names, values):
            out[name].append(value)
    if not info["positive_scores"]:
        raise InputError(f"task {task}: none of its {len(ids)} queries has a positive in the candidate pool "
                         f"({pool.name}); rebuild the tasks against this corpus")
    info["skipped"] = dict(info["skipped"])
    return pa.Table.from_pydict(out, schema=_QUERY_SCHEMA), info


def _split(block: pa.Table, kind: str) -> pa.Table:
    rows = block.filter(pc.equal(block.column("row_kind"), kind)).drop_columns(["row_kind"])
    if kind == "negative":
        return rows.drop_columns(["reason"]).cast(NEGATIVE_SCHEMA)
    rename = {n: n.replace("neg_", "cand_") for n in rows.column_names}
    rows = rows.rename_columns([rename[n] for n in rows.column_names])
    return rows.select(REJECTION_SCHEMA.names).cast(REJECTION_SCHEMA)


def _columns(block: pa.Table, names: list[str]) -> pa.Table:
    return block.select(names)


@dataclass
class Prepared:
    """Everything selection needs, after embedding and search."""

    pools: dict[str, Pool]
    queries: pa.Table  # one row per minable query (_QUERY_SCHEMA)
    per_task: dict[str, dict]
    inputs: list
    embed_stats: dict
    fingerprint: str
    max_length: int
    cache_name: str


def prepare(cfg: MineConfig, catalog: Catalog) -> Prepared:
    """Load examples and pools, embed what the cache lacks (Ray actor pool), search (FAISS)."""
    ensure_ray()
    ex_m = catalog.manifest("examples", cfg.examples, cfg.examples_version)
    examples = catalog.read_table("examples", cfg.examples, ex_m.version,
                                  columns=["task", "task_type", "example_id", "instruction", "query", "query_hash",
                                           "positive_ids", "label"])
    tasks = _choose_tasks(cfg, examples, cfg.examples)
    inputs = [ex_m.input_ref()]
    pools: dict[str, Pool] = {}
    if any(ty == "retrieval" for _, ty in tasks):
        pools["corpus"], corpus_m = _corpus_pool(catalog, ex_m)
        inputs.append(corpus_m.input_ref())
    task_rows: dict[str, pa.Table] = {}
    for task, task_type in tasks:
        rows = examples.filter(pc.equal(examples.column("task"), task))
        task_rows[task] = rows
        if task_type in CLASS_TYPES:
            pools[task] = Pool(task, pa.table({"id": rows.column("example_id"), "text": rows.column("query"),
                                               "hash": rows.column("query_hash"), "label": rows.column("label")}))

    # Embed everything not cached: pool texts as documents, queries with their prompt.
    texts: dict[str, str] = {}
    for pool in pools.values():
        for t in pool.table.column("text").to_pylist():
            texts[text_key(t)] = t
    query_strings = {task: [query_string(cfg, ins, q) for ins, q in zip(rows.column("instruction").to_pylist(),
                                                                        rows.column("query").to_pylist())]
                     for task, rows in task_rows.items()}
    for strings in query_strings.values():
        for q in strings:
            texts[text_key(q)] = q
    fp, max_length = describe(cfg.teacher)
    cache = EmbeddingCache(catalog, cfg.teacher.cache_name(fp, max_length), dim=None,
                           config={"teacher": cfg.teacher.as_dict(), "fingerprint": fp, "max_length": max_length})
    embed_stats = embed_missing(texts, cache, cfg.teacher, cfg.batch_size, cfg.encoders, cfg.max_batch_tokens)
    key_list = list(texts)
    vectors = cache.load(key_list)
    row_of = {k: i for i, k in enumerate(key_list)}
    for pool in pools.values():
        pool.vectors = vectors[[row_of[text_key(t)] for t in pool.table.column("text").to_pylist()]]
    inputs.append(cache.input_ref())

    # Search task by task; the corpus index is built once and shared.
    searchers: dict[str, Searcher] = {}
    query_tables, per_task = [], {}
    for task, task_type in tasks:
        pool = pools["corpus" if task_type == "retrieval" else task]
        if pool.name not in searchers:
            searchers[pool.name] = Searcher(pool.vectors, cfg.index)
        depth = min(cfg.depth, len(pool.position))
        if depth < cfg.depth:
            log.info("mine: %s: depth %d capped at the pool size %d", task, cfg.depth, depth)
        q_vectors = vectors[[row_of[text_key(q)] for q in query_strings[task]]]
        table, info = _task_queries(task, task_type, task_rows[task], pool, q_vectors, searchers[pool.name], depth)
        info["depth"] = depth
        query_tables.append(table)
        per_task[task] = info
    return Prepared(pools=pools, queries=pa.concat_tables(query_tables), per_task=per_task, inputs=inputs,
                    embed_stats=embed_stats, fingerprint=fp, max_length=max_length, cache_name=cache.name)


def teacher_label(cfg: MineConfig, fingerprint: str) -> str:
    return f"{cfg.teacher.teacher}#{fingerprint}"


def select_on_ray(prepared: Prepared, cfg: MineConfig, run_id: str) -> list:
    """The selection stage: ``select_batch`` over query chunks; returns ordered block refs."""
    import ray
    import ray.data

    queries = prepared.queries
    chunks = [queries.slice(i, cfg.chunk_rows) for i in range(0, queries.num_rows, cfg.chunk_rows)]
    pool_refs = {name: ray.put(pool.table) for name, pool in prepared.pools.items()}
    log.info("mine: selecting negatives for %d queries (%s, margin %s, %d per query, %s sampling)",
             queries.num_rows, cfg.selection.strategy, cfg.selection.effective_margin, cfg.selection.num_negatives,
             cfg.selection.sampling)
    selected = ray.data.from_arrow(chunks).map_batches(
        select_batch, fn_kwargs={"pools": pool_refs, "cfg": cfg.selection, "class_cfg": cfg.class_selection,
                                 "teacher": teacher_label(cfg, prepared.fingerprint), "run_id": run_id},
        batch_size=None, batch_format="pyarrow", num_cpus=1)
    return selected.to_arrow_refs()


def mine(cfg: MineConfig, catalog: Catalog) -> MineResult:
    import ray

    prepared = prepare(cfg, catalog)
    run_id = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    blocks = select_on_ray(prepared, cfg, run_id)
    per_task = prepared.per_task

    # Split each block once; the report reads a few columns of the parts, the writers the parts.
    split, columns = ray.remote(_split), ray.remote(_columns)
    parts = {kind: [split.remote(b, kind) for b in blocks] for kind in ("negative", "rejected")}
    report_columns = {"negative": ["task", "example_id", "neg_score"], "rejected": ["task", "reason", "cand_score"]}
    report_parts = {kind: pa.concat_tables(ray.get([columns.remote(p, report_columns[kind]) for p in refs]))
                    for kind, refs in parts.items()}
    thresholds = {eid: cfg.selection_for(info["type"]).threshold(score)
                  for info in per_task.values() for eid, score in info["positive_scores"].items()}
    report = build_report(per_task, report_parts["negative"], report_parts["rejected"],
                          cfg.selection.num_negatives, thresholds)
    for task, info in per_task.items():
        report[task]["depth"] = info["depth"]
        report[task]["strategy"] = cfg.selection_for(info["type"]).strategy
    if sum(r["negatives"] for r in report.values()) == 0:
        raise InputError("no negatives survived selection for any query: loosen --margin or raise --depth "
                         "(rejections are counted in the report)")
    config = {"stage": "mine", **asdict(cfg), "run_id": run_id, "teacher_fingerprint": prepared.fingerprint,
              "teacher_max_length": prepared.max_length, "embedding_cache": prepared.cache_name}
    name = cfg.output_name
    with catalog.writer("rejections", name) as writer:
        write_blocks_ordered(parts["rejected"], block_sizes(parts["rejected"]), writer.staging_dir,
                             writer.filesystem, rows_per_file=1_000_000, schema=REJECTION_SCHEMA)
        rejections_m = writer.commit(config=config, inputs=prepared.inputs, allow_empty=True,
                                     stats={"rejected_by_task": {t: r["rejected"] for t, r in report.items()}})
    with catalog.writer("negatives", name) as writer:
        write_blocks_ordered(parts["negative"], block_sizes(parts["negative"]), writer.staging_dir,
                             writer.filesystem, rows_per_file=1_000_000, schema=NEGATIVE_SCHEMA)
        writer.attach("report.json", to_json(report))
        writer.attach("scores.png", plot_scores(_plot_inputs(per_task, report_parts, thresholds),
                                                cfg.selection.strategy, cfg.selection.effective_margin))
        negatives_m = writer.commit(config={**config, "rejections_version": rejections_m.version},
                                    inputs=prepared.inputs + [rejections_m.input_ref()],
                                    stats={"report": report, "embedding": prepared.embed_stats})
    log.info("mine: %d negatives for %d queries, %d candidates rejected", negatives_m.num_rows,
             sum(r["queries_mined"] for r in report.values()), rejections_m.num_rows)
    return MineResult(negatives=negatives_m, rejections=rejections_m, report=report,
                      embed_stats=prepared.embed_stats, run_id=run_id)


def _plot_inputs(per_task: dict, parts: dict, thresholds: dict) -> dict:
    negatives, rejected = parts["negative"], parts["rejected"]
    out = {}
    for task, info in per_task.items():
        neg = negatives.filter(pc.equal(negatives.column("task"), task)).column("neg_score").to_numpy()
        rej = rejected.filter(pc.and_(pc.equal(rejected.column("task"), task),
                                      pc.equal(rejected.column("reason"), "above_threshold")))
        finite = [thresholds[e] for e in info["positive_scores"] if np.isfinite(thresholds[e])]
        out[task] = {"positive": np.array(list(info["positive_scores"].values())), "negative": neg,
                     "above": rej.column("cand_score").to_numpy(), "thresholds": np.array(finite)}
    return out
