"""Mining, stage 1's candidate lists: searched, kept across re-mines, and updated in place.

Every mine writes ``candidates/<name>`` beside ``searched/<name>``: per mined query, its
candidate list to ``--depth`` + ``list_extra`` (pool positions as int32 into the pool
version the mine searched, canonical scores as float32) and the list's bound
(``miners.candidates``). A re-mine that may reuse the previous run (``pipelines.mine.reuse``)
reads them back, moved to the current pool's positions with the documents that left or
changed dropped, and:

- a query the edit cannot reach keeps its negatives, and its list with a raised bound;
- a reached query whose own text, positives and labels are unchanged is **updated**: only
  the documents that joined or changed are searched (one small flat index of them, for
  every such query at once) and merged into its list; if the merged list passes the
  exactness test, its top ``--depth`` is what a full search would return;
- any other query, and one whose merged list fails the test, is **searched** in full.

Tested by tests/miners/test_candidates.py (the lists) and
tests/pipelines/mine/test_incremental_ray.py (random edits, against ``--no-reuse``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from miners.candidates import CandidateLists, from_search, merge, raised, remap, searched
from miners.index import Searcher
from miners.reach import max_scores

KIND = "candidates"
SCHEMA = pa.schema([("task", pa.string()), ("example_id", pa.string()), ("positions", pa.list_(pa.int32())),
                    ("scores", pa.list_(pa.float32())), ("bound", pa.float32())])


def id_ranks(ids: list[str]) -> np.ndarray:
    """Each pool document's rank among the pool's ids: the tie order of canonical lists."""
    return np.argsort(np.argsort(np.asarray(ids, dtype=object), kind="stable"), kind="stable").astype(np.int64)


@dataclass
class JoinedHits:
    """Queries against the documents that joined the pool or changed: FAISS's top k of
    them, searched once per re-mine for the reach test and the list updates both."""

    scores: np.ndarray  # (Q, k) float32
    positions: np.ndarray  # (Q, k) current pool positions
    complete: bool  # k covered every joined document

    def take(self, rows) -> JoinedHits:
        return JoinedHits(self.scores[rows], self.positions[rows], self.complete)

    def best(self) -> np.ndarray:
        return self.scores[:, 0]


@dataclass
class StoredTask:
    """One task's previous lists, in the current pool's positions."""

    rows: dict[str, int]  # example id -> row of ``lists``
    lists: CandidateLists
    joined: np.ndarray  # current positions of the documents that joined or changed
    # Per row: an upper bound of the previous score of every document that left the pool
    # or changed (its list entry's score, else the list's bound); -inf when none left.
    left_upper: np.ndarray
    hits: JoinedHits | None = None  # every query of the task against ``joined`` (joined_hits)


@dataclass
class PathCounts:
    """How the queries of a mine got their candidates."""

    updated: int = 0  # reached, facts unchanged, merged list exact
    searched: dict[str, int] = field(default_factory=dict)  # reason -> queries searched in full

    def add(self, other: "PathCounts") -> None:
        self.updated += other.updated
        for why, n in other.searched.items():
            self.searched[why] = self.searched.get(why, 0) + n

    def summary(self) -> str:
        full = sum(self.searched.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.searched.items(), key=lambda kv: -kv[1]))
        return f"{self.updated} queries updated from their stored lists, {full} searched in full" + (
            f" ({why})" if why else "")


def stored_task(table: pa.Table, old_to_new: np.ndarray, joined: list[int], width: int) -> StoredTask:
    """A task's rows of ``candidates`` (as written) in the current pool. Lists written
    longer than ``width`` (a larger ``list_extra`` then) are cut, their bound raised to
    the best entry cut."""
    ids = table.column("example_id").to_pylist()
    scores = _matrix(table.column("scores"), width + 1, -np.inf, np.float32)
    bound = table.column("bound").to_numpy(zero_copy_only=False).astype(np.float32)
    lists = CandidateLists(_matrix(table.column("positions"), width, -1, np.int64), scores[:, :width],
                           np.maximum(bound, scores[:, width]))
    return StoredTask({e: i for i, e in enumerate(ids)}, remap(lists, old_to_new), np.asarray(joined, dtype=np.int64),
                      left_upper(lists, old_to_new))


def left_upper(lists: CandidateLists, old_to_new: np.ndarray) -> np.ndarray:
    """Per list (over the previous pool): the best score of its entries that left or
    changed (-1 in ``old_to_new``), or its bound if higher, since any such document
    outside the list scored at most that; -inf when no document left at all."""
    if not (old_to_new < 0).any():
        return np.full(len(lists.bound), -np.inf, np.float32)
    at = lists.positions
    gone = (at >= 0) & (old_to_new[np.maximum(at, 0)] < 0)
    return np.maximum(np.where(gone, lists.scores, -np.inf).max(axis=1, initial=-np.inf), lists.bound)


def joined_hits(queries: np.ndarray, vectors: np.ndarray, stored: StoredTask) -> JoinedHits | None:
    """``queries`` against the joined and changed documents, to the lists' width; None
    when none joined."""
    if len(stored.joined) == 0:
        return None
    k = min(stored.lists.positions.shape[1], len(stored.joined))
    scores, local = Searcher(vectors[stored.joined]).search(queries, k)
    return JoinedHits(scores, stored.joined[local], complete=k >= len(stored.joined))


def _matrix(column: pa.ChunkedArray, width: int, fill, dtype) -> np.ndarray:
    """A list column as a (rows x width) matrix, rows cut or padded with ``fill``."""
    lists = column.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    out = np.full((len(lengths), width), fill, dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    column_at = np.arange(len(values)) - offsets[rows]
    inside = column_at < width
    out[rows[inside], column_at[inside]] = values[inside]
    return out


def candidates_for(queries: np.ndarray, ids: list[str], facts_changed: np.ndarray, vectors: np.ndarray,
                   id_rank: np.ndarray, searcher: Searcher, depth: int, width: int,
                   stored: StoredTask | None, hits: JoinedHits | None = None) -> tuple[CandidateLists, PathCounts]:
    """Lists for the reached queries ``queries`` (their ids and whether their facts
    changed): updated where the stored list allows it, else searched. ``hits``: their
    rows of ``joined_hits``, if searched already."""
    counts = PathCounts()
    out = CandidateLists(np.full((len(queries), width), -1, np.int64),
                         np.full((len(queries), width), -np.inf, np.float32), np.zeros(len(queries), np.float32))
    full = np.ones(len(queries), dtype=bool)
    if stored is not None and len(queries):
        at = np.array([stored.rows.get(e, -1) for e in ids], dtype=np.int64)
        eligible = (at >= 0) & ~np.asarray(facts_changed, dtype=bool)
        _count(counts, "new or never listed", int(((at < 0) & ~facts_changed).sum()))
        _count(counts, "its text, positives or labels changed", int(np.asarray(facts_changed).sum()))
        if eligible.any():
            updated = _update(queries[eligible], stored, at[eligible], vectors, id_rank, width,
                              hits.take(eligible) if hits is not None else None)
            exact = updated.exact(depth)
            rows = np.flatnonzero(eligible)[exact]
            _put(out, rows, updated, exact)
            full[rows] = False
            counts.updated += int(exact.sum())
            _count(counts, "its updated list could not prove its top depth", int((~exact).sum()))
    elif len(queries):
        _count(counts, "no stored lists to update", len(queries))
    rows = np.flatnonzero(full)
    if len(rows):
        _put(out, rows, searched(queries[rows], vectors, id_rank, searcher.search, width, depth),
             np.ones(len(rows), bool))
    return out, counts


def kept_lists(queries: np.ndarray, ids: list[str], vectors: np.ndarray, stored: StoredTask,
               width: int, best_joined: np.ndarray | None = None) -> CandidateLists:
    """The stored lists of the queries the edit cannot reach, bounds raised by the best
    score of a document that joined or changed (``best_joined``, if searched already)."""
    at = np.array([stored.rows[e] for e in ids], dtype=np.int64)
    kept = CandidateLists(stored.lists.positions[at], stored.lists.scores[at], stored.lists.bound[at])
    if best_joined is None:
        best_joined = max_scores(queries, vectors[stored.joined])
    return raised(_widened(kept, width), best_joined)


def _update(queries: np.ndarray, stored: StoredTask, at: np.ndarray, vectors: np.ndarray, id_rank: np.ndarray,
            width: int, hits: JoinedHits | None) -> CandidateLists:
    kept = CandidateLists(stored.lists.positions[at], stored.lists.scores[at], stored.lists.bound[at])
    if len(stored.joined) == 0:
        return _widened(kept, width)
    if hits is None:
        hits = joined_hits(queries, vectors, stored)
    joined = from_search(queries, vectors, id_rank, hits.scores, hits.positions, complete=hits.complete)
    return merge(kept, joined, id_rank, width)


def _widened(lists: CandidateLists, width: int) -> CandidateLists:
    n = lists.positions.shape[1]
    if n >= width:
        return CandidateLists(lists.positions[:, :width], lists.scores[:, :width], lists.bound)
    pad = width - n
    return CandidateLists(np.pad(lists.positions, ((0, 0), (0, pad)), constant_values=-1),
                          np.pad(lists.scores, ((0, 0), (0, pad)), constant_values=-np.inf), lists.bound)


def _put(out: CandidateLists, rows: np.ndarray, lists: CandidateLists, keep: np.ndarray) -> None:
    lists = _widened(lists, out.positions.shape[1])
    out.positions[rows] = lists.positions[keep]
    out.scores[rows] = lists.scores[keep]
    out.bound[rows] = lists.bound[keep]


def _count(counts: PathCounts, why: str, n: int) -> None:
    if n:
        counts.searched[why] = counts.searched.get(why, 0) + n


def lists_table(task: str, ids: list[str], lists: CandidateLists) -> pa.Table:
    """A task's rows of ``candidates/<name>``: padding left out of each list."""
    valid = lists.positions >= 0
    counts = valid.sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    positions = pa.ListArray.from_arrays(offsets, pa.array(lists.positions[valid].astype(np.int32)))
    scores = pa.ListArray.from_arrays(offsets, pa.array(lists.scores[valid].astype(np.float32)))
    return pa.table([pa.array([task] * len(ids), pa.string()), pa.array(ids, pa.string()), positions, scores,
                     pa.array(lists.bound.astype(np.float32))], schema=SCHEMA)
