"""Mining, stage 1: candidate pools, teacher embeddings, and the FAISS top-k of every query.

Retrieval tasks search the corpus their examples point into (the version the examples were
built from); classification and clustering tasks search their own examples, so a negative
is always another example, of another class. Texts the embedding cache lacks are encoded
in the driver or on a Ray actor pool (``pipelines.runtime.encoding``); the search runs in the
driver, task by task, with one index per pool.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.cache import EmbeddingCache, EmbedStats
from miners.index import Searcher
from miners.report import TaskInfo
from miners.select import normalized_query_key
from miners.teacher import ResolvedTeacher, cache_key, resolve_teacher
from pipelines.inputs import choose_tasks, tasks_in
from pipelines.mine.config import MineConfig, TaskPlan, plan_task
from pipelines.mine.judge import Judged, judge_candidates, resolve_judge
from pipelines.mine.lists import (
    PathCounts,
    StoredTask,
    candidates_for,
    id_ranks,
    kept_lists,
    lists_table,
    stored_task,
)
from pipelines.mine.pools import Pool, pools_for, read_with_nulls
from pipelines.mine.reuse import Previous, load_previous, reach_inputs, search_masks
from pipelines.mine.texts import PoolTexts
from pipelines.runtime.encoding import embed_missing, encoder_shape
from pipelines.runtime.local_ray import ensure_ray
from storage import Catalog, InputError, InputRef
from storage.schemas import MINABLE_TYPES

log = logging.getLogger("quarry")

# One row per query that has a positive in its pool: what selection needs to know of it.
QUERY_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("source_id", pa.string()),
    ("query", pa.string()), ("label", pa.string()), ("positive_positions", pa.list_(pa.int64())),
    ("positive_scores", pa.list_(pa.float32())), ("self_position", pa.int64()),
    ("cand_positions", pa.list_(pa.int64())), ("cand_scores", pa.list_(pa.float32())),
    ("cross_positions", pa.list_(pa.int64())), ("kth_score", pa.float32()),
    ("query_row", pa.int64()),  # the row's number in SearchResult.queries: selection names the query text by it
    # Each candidate's highest similarity to one of the query's positive documents; empty
    # unless the selection's max_positive_similarity needs it.
    ("positive_sims", pa.list_(pa.float32())),
    # A judge's scores of the candidates and the positives (pipelines.mine.judge); empty without one.
    ("judge_cand_scores", pa.list_(pa.float32())), ("judge_positive_scores", pa.list_(pa.float32())),
])
CANDIDATE_COLUMNS = ("cand_positions", "cand_scores", "positive_sims", "judge_cand_scores", "judge_positive_scores")
POSITIVE_NOT_IN_POOL = "positive_not_in_pool"
EXAMPLE_COLUMNS = ["task", "task_type", "example_id", "source_id", "instruction", "query", "query_hash", "positive_ids",
                   "label"]


@dataclass
class SearchResult:
    """Everything selection and the writers need, after embedding and search."""

    plans: dict[str, TaskPlan]
    pools: dict[str, Pool]
    queries: pa.Table  # QUERY_SCHEMA, tasks in plan order
    tasks: dict[str, TaskInfo]
    inputs: list[InputRef]  # examples, corpus, embedding cache versions
    teacher: ResolvedTeacher
    embed_stats: EmbedStats
    cache_name: str
    previous: Previous | None = None  # the run whose negatives the carried queries keep
    carried: dict[str, list[str]] = field(default_factory=dict)  # task -> example ids not searched again
    judge: str | None = None  # the judge whose scores selection reads, as the rows name it
    judge_stats: EmbedStats | None = None
    lists: pa.Table | None = None  # candidates/<name> (pipelines.mine.lists)
    paths: PathCounts | None = None

    @property
    def carried_count(self) -> int:
        return sum(len(v) for v in self.carried.values())

    def pool_texts(self) -> PoolTexts:
        return PoolTexts({name: pool.table.column("text") for name, pool in self.pools.items()},
                         {task: plan.pool for task, plan in self.plans.items()})


def search(cfg: MineConfig, catalog: Catalog) -> SearchResult:
    """Load examples and pools, embed what the cache lacks (pipelines.runtime.encoding), search (FAISS)."""
    ex_m = catalog.manifest("examples", cfg.examples, cfg.examples_version)
    examples = read_with_nulls(catalog, ex_m, EXAMPLE_COLUMNS)
    chosen = choose_tasks(tasks_in(examples), cfg.tasks, MINABLE_TYPES, f"examples/{cfg.examples}",
                          "hard negatives are mined for")
    plans = {task: plan_task(cfg, task, task_type) for task, task_type in chosen.items()}
    inputs = [ex_m.input_ref()]
    task_rows = {task: examples.filter(pc.equal(examples.column("task"), task)) for task in plans}
    pools = pools_for(plans, task_rows, catalog, ex_m, inputs)
    query_strings = {task: [cfg.query_string(ins, q) for ins, q in zip(rows.column("instruction").to_pylist(),
                                                                        rows.column("query").to_pylist())]
                     for task, rows in task_rows.items()}
    teacher = resolve_teacher(cfg.teacher)  # before Ray starts: a teacher that is not there fails fast
    judge = resolve_judge(cfg.judge) if cfg.judge else None  # as the teacher: before any encoding
    ensure_ray()
    teacher = teacher.on_device(cfg.teacher.precision, encoder_shape().device)  # what auto means there
    log.info("mine: teacher %s at %s precision", teacher.label, teacher.precision)
    cache = EmbeddingCache(catalog, teacher.cache_name, dim=None, config=teacher.provenance())
    depths = {task: min(cfg.depth, len(pools[plan.pool].position)) for task, plan in plans.items()}
    embedded = _embed(cfg, teacher, catalog, cache, plans, pools, task_rows, query_strings, depths)
    inputs.append(cache.input_ref())
    stored = {task: _stored(embedded, task, _width(cfg, depths[task], pools[plan.pool]), task_rows[task])
              for task, plan in plans.items()}
    masks = search_masks(embedded.reach, {task: plan.pool for task, plan in plans.items()},
                         {name: pool.vectors for name, pool in pools.items()}, embedded.query_vectors,
                         {task: lists for task, (lists, _) in stored.items()},
                         {task: rows.column("example_id").to_pylist() for task, rows in task_rows.items()}
                         ) if embedded.previous else None
    found = _search_tasks(cfg, plans, pools, task_rows, embedded.query_vectors, depths, masks, stored)
    queries, tasks, carried = found.queries, found.tasks, found.carried
    judged = _judged(cfg, judge, catalog, queries, pools, plans, task_rows, query_strings) if judge else None
    queries = judged.queries if judged else queries
    inputs += judged.inputs if judged else []
    result = SearchResult(plans=plans, pools=pools, queries=queries, tasks=tasks,
                          inputs=inputs, teacher=teacher, embed_stats=embedded.stats, cache_name=cache.name,
                          previous=embedded.previous, carried=carried if embedded.previous else {},
                          judge=judged.label if judged else None, judge_stats=judged.stats if judged else None,
                          lists=found.lists, paths=found.paths)
    if embedded.previous:
        log.info("mine: %d queries reached by the change: %s; %d keep their negatives from negatives/%s %s (the "
                 "change cannot reach them)", result.queries.num_rows, found.paths.summary(), result.carried_count,
                 cfg.output_name, embedded.previous.version)
    return result


def _judged(cfg: MineConfig, judge, catalog: Catalog, queries: pa.Table, pools: dict[str, Pool],
            plans: dict[str, TaskPlan], task_rows: dict[str, pa.Table],
            query_strings: dict[str, list[str]]) -> Judged | None:
    """The query rows with a judge's scores (pipelines.mine.judge), or None with no query."""
    if not queries.num_rows:
        return None
    strings = {e: s for task, rows in task_rows.items()
               for e, s in zip(rows.column("example_id").to_pylist(), query_strings[task])}
    return judge_candidates(cfg.judge, judge, catalog, queries,
                            {name: pool.table.column("text").to_pylist() for name, pool in pools.items()},
                            {task: plan.pool for task, plan in plans.items()}, strings,
                            {"batch_size": cfg.batch_size, "encoders": cfg.encoders,
                             "max_batch_tokens": cfg.max_batch_tokens, "encode_in": cfg.encode_in})


@dataclass
class _Embedded:
    """The vectors a search needs, and what of the previous run it may reuse."""

    query_vectors: dict[str, np.ndarray]  # task -> one row per query
    stats: EmbedStats
    previous: Previous | None
    reach: dict | None  # task -> ReachInputs (None when nothing is reused)


def _embed(cfg: MineConfig, teacher: ResolvedTeacher, catalog: Catalog, cache: EmbeddingCache,
           plans: dict[str, TaskPlan], pools: dict[str, Pool], task_rows: dict[str, pa.Table],
           query_strings: dict[str, list[str]], depths: dict[str, int]) -> _Embedded:
    """Embed every pool text (as a document) and query string the cache lacks; set each
    pool's vectors and return the queries'."""
    texts: dict[str, str] = {}
    for pool in pools.values():
        for t in pool.table.column("text").to_pylist():
            texts[cache_key(t)] = t
    for strings in query_strings.values():
        for q in strings:
            texts[cache_key(q)] = q
    key_list = list(texts)
    with ThreadPoolExecutor(1, thread_name_prefix="quarry-read") as reader:
        # While this thread loads the teacher and encodes, another reads what needs no new
        # vector: the cached vectors, the previous run and what of it a change can reach.
        # Arrow reads mostly without the GIL, so in a re-mine this hides behind the teacher's
        # imports (docs/benchmarks.md, "Re-mining after an edit").
        early = reader.submit(_read_before_encoding, cfg, teacher, catalog, cache, key_list, plans,
                              {name: pool.table for name, pool in pools.items()}, task_rows, query_strings, depths)
        stats = embed_missing(texts, cache, teacher, cfg.batch_size, cfg.encoders, cfg.max_batch_tokens,
                              cfg.encode_in)
        present, vectors_present, previous, reach = early.result()
        del early  # the future holds its result: the vectors go when the locals below do
    vectors = _with_new_vectors(cache, key_list, present, vectors_present)
    del vectors_present
    log.info("mine: %d vectors loaded from embeddings/%s", len(key_list), cache.name)
    row_of = {k: i for i, k in enumerate(key_list)}
    for pool in pools.values():
        pool.vectors = vectors[[row_of[cache_key(t)] for t in pool.table.column("text").to_pylist()]]
    # Every row is now in a pool's or a task's copy: at 1M passages and 1M queries (384
    # dimensions) the loaded matrix was another 3 GB held through the search.
    query_vectors = {task: vectors[[row_of[cache_key(q)] for q in query_strings[task]]] for task in plans}
    return _Embedded(query_vectors, stats, previous, reach)


@dataclass
class _Searched:
    queries: pa.Table  # QUERY_SCHEMA rows, numbered across tasks
    tasks: dict[str, TaskInfo]
    carried: dict[str, list[str]]  # task -> example ids that keep their previous negatives
    lists: pa.Table  # candidates/<name> (pipelines.mine.lists)
    paths: PathCounts


def _search_tasks(cfg: MineConfig, plans: dict[str, TaskPlan], pools: dict[str, Pool],
                  task_rows: dict[str, pa.Table], q_vectors: dict[str, np.ndarray], depths: dict[str, int],
                  masks: dict[str, np.ndarray] | None,
                  stored: dict[str, tuple[StoredTask | None, np.ndarray | None]]) -> _Searched:
    """Search task by task; each pool's index is built once, when some query needs it."""
    searchers: dict[str, Searcher] = {}
    ranks: dict[str, np.ndarray] = {}
    query_tables, list_tables, tasks, carried, paths = [], [], {}, {}, PathCounts()
    for plan in plans.values():
        pool = pools[plan.pool]
        depth = depths[plan.task]
        if depth < cfg.depth:
            log.info("mine: %s: depth %d capped at the pool size %d", plan.task, cfg.depth, depth)
        mask = masks[plan.task] if masks else np.ones(task_rows[plan.task].num_rows, dtype=bool)
        if mask.any() and pool.name not in searchers:
            searchers[pool.name] = Searcher(pool.vectors, cfg.index)
        if pool.name not in ranks:
            ranks[pool.name] = id_ranks(pool.table.column("id").to_pylist())
        lists = _TaskLists(_width(cfg, depth, pool), ranks[pool.name], *stored[plan.task])
        table, skipped, carried[plan.task], listed, counts = _task_queries(
            plan, task_rows[plan.task], pool, q_vectors[plan.task], searchers.get(pool.name), depth, mask, lists)
        query_tables.append(table)
        list_tables.append(listed)
        paths.add(counts)
        tasks[plan.task] = TaskInfo(task_type=plan.task_type, strategy=plan.selection.strategy, depth=depth,
                                    queries=task_rows[plan.task].num_rows, skipped=skipped)
    queries = pa.concat_tables(query_tables)
    queries = queries.set_column(queries.schema.get_field_index("query_row"), "query_row",
                                 pa.array(np.arange(queries.num_rows, dtype=np.int64)))
    return _Searched(queries, tasks, carried, pa.concat_tables(list_tables), paths)


@dataclass
class _TaskLists:
    """What a task's search needs to keep and update candidate lists."""

    width: int  # candidates listed per query: --depth + list_extra, within the pool
    id_rank: np.ndarray
    stored: StoredTask | None  # the previous run's lists, moved to this pool
    facts_changed: np.ndarray | None  # per example row (None: no previous run)


def _width(cfg: MineConfig, depth: int, pool: Pool) -> int:
    """Candidates listed per query: --depth + list_extra, within the pool."""
    return min(depth + cfg.list_extra, len(pool.position))


def _stored(embedded: "_Embedded", task: str, width: int, rows: pa.Table) -> tuple[StoredTask | None,
                                                                                   np.ndarray | None]:
    reach = (embedded.reach or {}).get(task)
    previous = embedded.previous
    if reach is None or previous is None or previous.lists is None:
        return None, None
    table = previous.lists.filter(pc.equal(previous.lists.column("task"), task))
    return stored_task(table, reach.old_to_new, reach.joined_positions, width), reach.facts_changed


def _read_before_encoding(cfg: MineConfig, teacher: ResolvedTeacher, catalog: Catalog, cache: EmbeddingCache,
                          keys: list[str], plans: dict[str, TaskPlan], pool_tables: dict[str, pa.Table],
                          task_rows: dict[str, pa.Table], query_strings: dict[str, list[str]], depths: dict[str, int]):
    """The cache's vectors of ``keys`` as it is now (which it holds, and theirs), and the
    previous run to reuse with its reach inputs (both None when nothing can be reused)."""
    present, vectors = cache.load_present(keys)
    previous = load_previous(cfg, teacher, catalog)
    reach = reach_inputs(previous, cfg, catalog, cache, plans, pool_tables, task_rows, query_strings,
                         depths) if previous else None
    return present, vectors, (previous if reach is not None else None), reach


def _with_new_vectors(cache: EmbeddingCache, keys: list[str], present: np.ndarray,
                      vectors_present: np.ndarray) -> np.ndarray:
    """Every key's vector: those read before the encoding, and the rest from the cache now."""
    if present.all():
        return vectors_present
    rest = cache.load([k for k, p in zip(keys, present.tolist()) if not p])
    if not present.any():
        return rest
    vectors = np.empty((len(keys), rest.shape[1]), dtype=np.float32)
    vectors[present] = vectors_present
    vectors[~present] = rest
    return vectors


def _task_queries(plan: TaskPlan, rows: pa.Table, pool: Pool, q_vectors: np.ndarray, searcher: Searcher | None,
                  depth: int, mask: np.ndarray, lists: _TaskLists
                  ) -> tuple[pa.Table, dict[str, int], list[str], pa.Table, PathCounts]:
    """Search the task's queries that ``mask`` selects (or update their stored lists,
    pipelines.mine.lists) and gather the facts selection needs, one row per query.

    Returns the rows, the queries left out by reason, the example ids of the minable
    queries the mask left out (they keep their previous negatives), every minable query's
    candidate list and how the searched ones got theirs.
    """
    ids = rows.column("example_id").to_pylist()
    queries = rows.column("query").to_pylist()
    labels = rows.column("label").to_pylist()
    source_ids = rows.column("source_id").to_pylist()
    positives = rows.column("positive_ids").to_pylist()
    positions = [[pool.position[p] for p in pids if p in pool.position] for pids in positives]
    # Queries with the same (normalised) text: each one's positives are false negatives for the others.
    same_text: dict[str, set[int]] = defaultdict(set)
    keys = [normalized_query_key(q) for q in queries]
    for key, pos in zip(keys, positions):
        same_text[key].update(pos)
    out: dict[str, list] = {name: [] for name in QUERY_SCHEMA.names if name not in CANDIDATE_COLUMNS + ("query_row",)}
    skipped: dict[str, int] = defaultdict(int)
    todo = [i for i in range(len(ids)) if positions[i] and mask[i]]
    carried_rows = [i for i in range(len(ids)) if positions[i] and not mask[i]]
    carried = [ids[i] for i in carried_rows]
    facts = lists.facts_changed if lists.facts_changed is not None else np.zeros(len(ids), dtype=bool)
    hits = lists.stored.hits if lists.stored is not None else None  # searched with the reach test
    found, counts = candidates_for(q_vectors[todo], [ids[i] for i in todo], facts[todo], pool.vectors,
                                   lists.id_rank, searcher, depth, lists.width, lists.stored,
                                   hits.take(todo) if hits is not None else None)
    cands, scores = found.top(depth)
    listed = [lists_table(plan.task, [ids[i] for i in todo], found)]
    if carried_rows:
        listed.append(lists_table(plan.task, carried, kept_lists(
            q_vectors[carried_rows], carried, pool.vectors, lists.stored, lists.width,
            hits.take(carried_rows).best() if hits is not None else None)))
    row = {i: n for n, i in enumerate(todo)}
    for i, example_id in enumerate(ids):
        if not positions[i]:
            skipped[POSITIVE_NOT_IN_POOL] += 1
            continue
        if i not in row:
            continue
        pos_scores = (pool.vectors[positions[i]] @ q_vectors[i]).astype(np.float32)
        n = row[i]
        values = (plan.task, plan.task_type, example_id, source_ids[i], queries[i], labels[i], positions[i],
                  pos_scores.tolist(),
                  pool.position.get(example_id) if plan.filters_same_class else None,
                  sorted(same_text[keys[i]] - set(positions[i])), float(scores[n][depth - 1]))
        for name, value in zip(out, values):
            out[name].append(value)
    if skipped.get(POSITIVE_NOT_IN_POOL, 0) == len(ids):  # .get: a defaultdict lookup would add a 0
        raise InputError(f"task {plan.task}: none of its {len(ids)} queries has a positive in the candidate pool "
                         f"({pool.name}); rebuild the tasks against this corpus")
    # Rows were appended in ``todo`` order, the order of the candidate lists' rows.
    table = _query_table(plan, pool, out, cands, scores, [positions[i] for i in todo])
    return table, dict(skipped), carried, pa.concat_tables(listed), counts


def _query_table(plan: TaskPlan, pool: Pool, out: dict[str, list], cands: np.ndarray, scores: np.ndarray,
                 positives: list[list[int]]) -> pa.Table:
    """The task's QUERY_SCHEMA rows: ``out``'s per-query values and the candidate columns,
    which go to Arrow straight from the arrays (as Python lists they cost an object per
    candidate, most of the driver's memory at 100k queries)."""
    n = len(positives)
    sims = (positive_similarities(pool.vectors, cands, positives)
            if n and plan.selection.max_positive_similarity is not None else np.empty((n, 0), np.float32))
    unjudged = list_column(np.empty((n, 0), np.float32), pa.float32())  # filled by a judge, if any
    columns = {"cand_positions": list_column(cands.astype(np.int64), pa.int64()),
               "cand_scores": list_column(scores.astype(np.float32), pa.float32()),
               "positive_sims": list_column(sims, pa.float32()),
               "judge_cand_scores": unjudged, "judge_positive_scores": unjudged,
               "query_row": pa.array(np.arange(n, dtype=np.int64))}  # numbered again once tasks are joined
    return pa.table([pa.array(out[f.name], f.type) if f.name in out else columns[f.name] for f in QUERY_SCHEMA],
                    schema=QUERY_SCHEMA)


def positive_similarities(vectors: np.ndarray, cands: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """(queries, depth) float32: each candidate's highest similarity to one of its query's
    positives, document against document (padding, -1, gets a value selection never reads)."""
    out = np.empty(cands.shape, dtype=np.float32)
    for n, pos in enumerate(positives):
        out[n] = (vectors[cands[n]] @ vectors[pos].T).max(axis=1)
    return out


def list_column(matrix: np.ndarray, value_type: pa.DataType, rows_per_chunk: int = 1 << 20) -> pa.ChunkedArray:
    """The rows of a 2-D array as an Arrow list column, with no Python object per value
    (chunked so that a chunk's 32-bit offsets never overflow)."""
    n, width = matrix.shape
    chunks = []
    for start in range(0, n, rows_per_chunk):
        part = np.ascontiguousarray(matrix[start:start + rows_per_chunk])
        offsets = pa.array(np.arange(len(part) + 1, dtype=np.int32) * np.int32(width))  # width 0: empty lists
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(part.reshape(-1), type=value_type)))
    return pa.chunked_array(chunks, type=pa.list_(value_type))
