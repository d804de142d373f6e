"""Mining, incremental: what a re-mine takes over from the previous run of the same name.

Every mine records ``searched/<name>``: one row per mined query with the depth it was
searched at, its k-th candidate score, and the anchor positive score and threshold that
selection applied. The next mine of the same name, with the same teacher, depth, index
and selection settings, an exact (flat) index and a cache that still holds the previous
texts' vectors, then searches and selects only the queries the change can reach
(``miners.reach``); the others' negatives and rejections rows are carried over from the
previous versions unchanged (run_id included: they are what that run computed).
``--no-reuse`` searches every query. ``tests/pipelines/mine/test_refresh_ray.py`` checks that
both give the same negatives and rejections.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.cache import EmbeddingCache
from miners.reach import reachable, reached_by
from miners.select import normalized_query_key
from miners.teacher import ResolvedTeacher, cache_key
from pipelines.mine.config import CORPUS_POOL, MineConfig, TaskPlan
from pipelines.mine.lists import KIND as LISTS
from pipelines.mine.lists import StoredTask, joined_hits
from pipelines.mine.texts import PoolTexts
from storage import Catalog, CatalogError, Manifest
from storage.writer import jsonable

log = logging.getLogger("quarry")

KIND = "searched"
EXAMPLE_COLUMNS = ["task", "example_id", "instruction", "query", "positive_ids", "label"]


def reuse_key(cfg: MineConfig, teacher: ResolvedTeacher) -> dict:
    """The settings two runs must share for one to reuse the other's searches."""
    d = asdict(cfg)
    return {"teacher_fingerprint": teacher.fingerprint, "teacher_max_length": teacher.max_length,
            **{k: d[k] for k in ("examples", "selection", "class_selection", "depth", "index", "query_prompt",
                                 "task_instructions", "judge")}}


@dataclass
class Previous:
    """The previous run of the same name, as far as reuse needs it."""

    negatives: Manifest
    searched: dict[tuple[str, str], tuple[int, float]]  # (task, example_id) -> (depth, k-th score)
    examples: pa.Table  # EXAMPLE_COLUMNS of the examples version it mined
    corpus: Manifest | None  # the corpus version it searched
    lists: pa.Table | None = None  # its candidate lists (pipelines.mine.lists); None: it kept none

    @property
    def version(self) -> str:
        return self.negatives.version


def load_previous(cfg: MineConfig, teacher: ResolvedTeacher, catalog: Catalog) -> Previous | None:
    """The previous run if this one may reuse it, else None (the log says why)."""
    name = cfg.output_name
    version = catalog.latest("negatives", name)
    if version is None or not cfg.reuse:
        return None
    m = catalog.manifest("negatives", name, version)
    why = None
    if cfg.index.kind != "flat":
        why = f"the {cfg.index.kind} index is approximate: its results can move when the pool changes"
    elif cfg.judge is not None:
        why = "a judge rescores the candidates, and what a change can reach is decided on the teacher's scores"
    elif {k: m.config.get(k) for k in reuse_key(cfg, teacher)} != jsonable(reuse_key(cfg, teacher)):
        why = "its teacher or settings differ"
    elif not companion_version(m, KIND):
        why = "it kept no per-query search record"
    elif "neg_source_id" not in m.arrow().names:
        why = "its rows predate source ids"
    elif "neg_judge_score" not in m.arrow().names:
        why = "its rows predate the judge's columns"
    elif not companion_version(m, LISTS):
        why = "it kept no candidate lists (its scores predate canonical scoring)"
    if why:
        log.info("mine: searching every query, not reusing negatives/%s %s: %s", name, version, why)
        return None
    searched = catalog.read_table(KIND, name, companion_version(m, KIND))
    record = {(t, e): (d, k) for t, e, d, k in zip(*(searched.column(c).to_pylist()
                                                    for c in ("task", "example_id", "depth", "kth_score")))}
    inputs = {i.kind: i for i in m.inputs}
    examples = catalog.read_table("examples", inputs["examples"].name, inputs["examples"].version,
                                  columns=EXAMPLE_COLUMNS)
    corpus = catalog.manifest("corpus", inputs["corpus"].name, inputs["corpus"].version) if "corpus" in inputs else None
    lists_version = companion_version(m, LISTS)
    lists = catalog.read_table(LISTS, name, lists_version) if lists_version else None
    return Previous(negatives=m, searched=record, examples=examples, corpus=corpus, lists=lists)


@dataclass
class PoolChange:
    """Documents of one pool that left or changed (previous texts) and that joined or changed."""

    changed_ids: set[str]  # left, joined or changed: a positive among them changes the query's facts
    left_texts: list[str]
    joined_positions: list[int]  # positions in the current pool
    old_to_new: np.ndarray  # previous pool position -> current one, -1 for a document that left or changed


def pool_change(pool_table: pa.Table, old_ids: list[str], old_texts: list[str], old_labels: list | None) -> PoolChange:
    """Compare a pool (id, text, label) with its previous state."""
    now_ids = pool_table.column("id").to_pylist()
    now_texts = pool_table.column("text").to_pylist()
    now_labels = pool_table.column("label").to_pylist()
    before = {i: (t, old_labels[n] if old_labels is not None else None)
              for n, (i, t) in enumerate(zip(old_ids, old_texts))}
    now = {i: (t, lab) for i, t, lab in zip(now_ids, now_texts, now_labels)}
    changed = {i for i in before if now.get(i) != before[i]} | {i for i in now if i not in before}
    left = [before[i][0] for i in before if i in changed]
    joined = [p for p, i in enumerate(now_ids) if i in changed]
    now_position = {i: p for p, i in enumerate(now_ids)}
    old_to_new = np.array([-1 if i in changed else now_position.get(i, -1) for i in old_ids], dtype=np.int64)
    return PoolChange(changed_ids=changed, left_texts=left, joined_positions=joined, old_to_new=old_to_new)


def previous_pool(previous: Previous, plan: TaskPlan, catalog: Catalog) -> tuple[list[str], list[str], list | None]:
    """(ids, texts, labels) of the pool the previous run searched for this task."""
    if plan.pool == CORPUS_POOL:
        c = previous.corpus
        table = catalog.read_table("corpus", c.name, c.version, columns=["doc_id", "text"])
        return table.column("doc_id").to_pylist(), table.column("text").to_pylist(), None
    rows = previous.examples.filter(pc.equal(previous.examples.column("task"), plan.task))
    return rows.column("example_id").to_pylist(), rows.column("query").to_pylist(), rows.column("label").to_pylist()


@dataclass
class ReachInputs:
    """What ``miners.reach.reachable`` needs of one task's queries, besides the vectors of
    the queries and of the documents that joined the pool: read before those exist."""

    previous_kth: np.ndarray  # per query: its previous k-th score, NaN when not searched at this depth
    facts_changed: np.ndarray  # per query: its text, positives or label changed, or a same-text query's did
    left: np.ndarray  # previous vectors of the pool's documents that left or changed text
    joined_positions: list[int]  # positions in the current pool of the documents that joined or changed
    old_to_new: np.ndarray  # previous pool position -> current one (-1: left or changed)


def reach_inputs(previous: Previous, cfg: MineConfig, catalog: Catalog, cache: EmbeddingCache,
                 plans: dict[str, TaskPlan], pool_tables: dict[str, pa.Table], task_rows: dict[str, pa.Table],
                 query_strings: dict[str, list[str]], depths: dict[str, int]) -> dict[str, ReachInputs | None] | None:
    """Per task, the reach inputs of its queries (None: the task has no previous pool, so
    every query is searched); None when the previous pool's vectors are no longer in the
    cache. Needs no vector of this run, so it runs while the teacher encodes
    (``pipelines.mine.search``)."""
    changes: dict[str, PoolChange] = {}
    left_vectors: dict[str, np.ndarray] = {}
    for plan in plans.values():
        if plan.pool in changes or (plan.pool == CORPUS_POOL and previous.corpus is None):
            continue
        change = pool_change(pool_tables[plan.pool], *previous_pool(previous, plan, catalog))
        try:
            left_vectors[plan.pool] = cache.load([cache_key(t) for t in change.left_texts]) if change.left_texts \
                else None
        except CatalogError:
            log.info("mine: searching every query: the cache no longer holds the previous pool's vectors")
            return None
        changes[plan.pool] = change
    old = {(t, e): r for t, e, r in zip(previous.examples.column("task").to_pylist(),
                                        previous.examples.column("example_id").to_pylist(),
                                        previous.examples.to_pylist())}
    out: dict[str, ReachInputs | None] = {}
    for task, plan in plans.items():
        rows = task_rows[task].to_pylist()
        change = changes.get(plan.pool)
        if change is None:
            out[task] = None
            continue
        kth = np.full(len(rows), np.nan, dtype=np.float32)
        facts = np.zeros(len(rows), dtype=bool)
        touched_texts = set()  # same-text queries share false negatives: a change to one reaches all
        now_ids = {r["example_id"] for r in rows}
        for (t, eid), r in old.items():
            if t == task and eid not in now_ids:
                touched_texts.add(normalized_query_key(r["query"]))
        for i, r in enumerate(rows):
            before = old.get((task, r["example_id"]))
            same = before is not None and (cfg.query_string(before["instruction"], before["query"]),
                                           before["positive_ids"], before["label"]) == (
                query_strings[task][i], r["positive_ids"], r["label"])
            if not same or set(r["positive_ids"]) & change.changed_ids:
                facts[i] = True
                touched_texts.add(normalized_query_key(r["query"]))
                if before is not None:
                    touched_texts.add(normalized_query_key(before["query"]))
            depth_kth = previous.searched.get((task, r["example_id"]))
            if depth_kth is not None and depth_kth[0] == depths[task]:
                kth[i] = depth_kth[1]
        for i, r in enumerate(rows):
            if normalized_query_key(r["query"]) in touched_texts:
                facts[i] = True
        out[task] = ReachInputs(previous_kth=kth, facts_changed=facts, left=left_vectors[plan.pool],
                                joined_positions=change.joined_positions, old_to_new=change.old_to_new)
    return out


def search_masks(inputs: dict[str, ReachInputs | None], pool_of_task: dict[str, str],
                 pool_vectors: dict[str, np.ndarray], query_vectors: dict[str, np.ndarray],
                 stored: Mapping[str, StoredTask | None] | None = None,
                 task_ids: Mapping[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Per task, which queries must be searched again (True) and which keep their previous
    negatives, once this run's vectors are loaded.

    A task with stored lists (``stored``, its queries' example ids in ``task_ids``) needs no
    search of the documents that left: their previous scores are bounded by the lists
    (``miners.reach.reached_by``); the joined documents are searched once, to the lists'
    width, and the hits kept on the ``StoredTask`` for the list updates."""
    masks = {}
    for task, reach in inputs.items():
        if reach is None:
            masks[task] = np.ones(len(query_vectors[task]), dtype=bool)
            continue
        vectors = pool_vectors[pool_of_task[task]]
        lists = (stored or {}).get(task)
        if lists is not None:
            lists.hits = joined_hits(query_vectors[task], vectors, lists)
            at = np.array([lists.rows.get(e, -1) for e in task_ids[task]], dtype=np.int64)
            best_left = np.where(at >= 0, lists.left_upper[np.maximum(at, 0)], np.inf)
            best_joined = lists.hits.best() if lists.hits is not None else np.full(len(at), -np.inf, np.float32)
            masks[task] = reached_by(reach.previous_kth, reach.facts_changed, best_left, best_joined)
            continue
        left = reach.left if reach.left is not None else np.zeros((0, vectors.shape[1]), np.float32)
        masks[task] = reachable(query_vectors[task], reach.previous_kth, reach.facts_changed, left,
                                vectors[reach.joined_positions])
    return masks


def version_key(kind: str) -> str:
    """The key under which a negatives version's config records the ``kind`` version
    (rejections, searched) its mine wrote beside it."""
    return f"{kind}_version"


def companion_version(negatives: Manifest, kind: str) -> str | None:
    """The version of ``kind`` (negatives, rejections, searched) written by the mine that
    wrote this negatives version; None for a run from before that kind was recorded."""
    return negatives.version if kind == "negatives" else negatives.config.get(version_key(kind))


# The candidate id and text columns of the kinds that name candidates.
CANDIDATE_TEXT = {"negatives": ("neg_id", "neg_text"), "rejections": ("cand_id", "cand_text")}


def carried_rows(catalog: Catalog, previous: Previous, kind: str, example_ids: list[str],
                 pool_ids: Mapping[str, pa.ChunkedArray], texts: PoolTexts) -> pa.Table:
    """The previous run's rows of ``kind`` (negatives, rejections, searched) of these queries.

    The candidates' texts are not read back: a query is carried only when the change
    touched no document among its candidates (``search_masks``), so each candidate's text
    is its text in the current pool, found by id (``pool_ids``: pool name -> ids in pool
    position order; ``texts``: the pools' texts). Reading them back was most of a
    re-mine's write time, since the rejections hold the text of every rejected candidate.
    ``tests/pipelines/mine/test_refresh_ray.py`` checks the rows equal those of a mine that
    searched every query.
    """
    version = companion_version(previous.negatives, kind)
    ids = pc.field("example_id").isin(pa.array(example_ids, pa.string()))
    if kind not in CANDIDATE_TEXT:
        return catalog.read_table(kind, previous.negatives.name, version, filter=ids)
    id_column, text_column = CANDIDATE_TEXT[kind]
    schema = catalog.manifest(kind, previous.negatives.name, version).arrow()
    rows = catalog.read_table(kind, previous.negatives.name, version,
                              columns=[n for n in schema.names if n != text_column], filter=ids)
    positions = np.full(rows.num_rows, -1, dtype=np.int64)
    task_values = rows.column("task").to_numpy(zero_copy_only=False)
    for task, pool in texts.pool_of_task.items():
        at = np.flatnonzero(task_values == task)
        found = pc.index_in(rows.column(id_column).take(pa.array(at)), value_set=pool_ids[pool])
        positions[at] = found.fill_null(-1).to_numpy(zero_copy_only=False)
    if (positions < 0).any():
        raise CatalogError(f"{int((positions < 0).sum())} candidates of carried queries are not in the current "
                           "pools: mine again with --no-reuse")
    return rows.add_column(schema.get_field_index(text_column), schema.field(text_column),
                           texts.at(rows.column("task"), positions))
