"""Candidate lists that a re-mine updates instead of searching again, exactly.

A query's candidate list is the top of the pool by a **canonical score**: the inner product
accumulated in float64 and rounded to float32, one pair at a time, so that a pair's score
does not depend on what else was searched with it (FAISS's float32 kernels round the same
pair differently in a 20-query batch and in a 4,096-query one). Ties are broken by the
documents' ids (``id_rank``: the rank of each pool document's id), which keep their order
from one pool version to the next, unlike positions.

Each list ``L`` carries a **bound** ``b``: every document of the pool outside ``L`` scores
at most ``b``. The top ``depth`` of a list are then exactly the pool's top ``depth`` when
the ``depth``-th of them scores strictly above ``b`` (a document outside could only tie
it at ``b`` or fall below). That is the test every list passes before it is used, and the
way it stays true:

- **A search** takes FAISS's top ``D`` (``D`` more than ``depth``) and scores them
  canonically. A document FAISS did not return scored at most FAISS's ``D``-th score,
  which is within ``TOLERANCE`` of its canonical score: ``b`` = that score + ``TOLERANCE``.
  A list that fails the test is rebuilt from every pool document (``brute_force``).
- **An edit** drops the documents that left or changed from every stored list (they are
  no longer in the pool as they were). The documents that joined or changed are searched
  among themselves (FAISS top ``D`` again, scored canonically) and merged in; the bound
  becomes the largest of the old bound, the new documents' own bound and the best
  document cut when the merged list is trimmed back to ``D``.
- **A query the edit cannot reach** (``miners.reach``) keeps its negatives and its list,
  left and changed documents dropped, its bound raised to the best score of the joined
  and changed documents (computed anyway to decide reach).

A query whose own text, positives or labels changed is searched in full. So is one whose
merged list fails the test; ``update_lists`` says which and why.

Tested by tests/miners/test_candidates.py against a canonical search of every document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOLERANCE = 1e-5  # FAISS float32 against canonical float64 scores: observed 1.2e-7 on unit vectors
CHUNK_VALUES = 1 << 24  # doubles gathered at once by canonical scoring (128 MiB)


@dataclass
class CandidateLists:
    """Per query, the candidate pool positions and canonical scores in canonical order,
    and the bound (module docstring). ``positions`` rows end in -1 padding."""

    positions: np.ndarray  # (Q, D) int64
    scores: np.ndarray  # (Q, D) float32, -inf on padding
    bound: np.ndarray  # (Q,) float32

    def top(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return self.positions[:, :depth], self.scores[:, :depth]

    def exact(self, depth: int) -> np.ndarray:
        """(Q,) bool: the first ``depth`` entries are the pool's top ``depth``."""
        if self.scores.shape[1] < depth:
            return np.zeros(len(self.bound), dtype=bool)
        if depth == 0:
            return np.ones(len(self.bound), dtype=bool)
        kth = self.scores[:, depth - 1]
        return (self.positions[:, depth - 1] >= 0) & (kth > self.bound)


def canonical_scores(queries: np.ndarray, vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(Q, K) float32: each query against the pool documents at ``positions`` (-1: -inf),
    accumulated in float64, pair by pair."""
    out = np.full(positions.shape, -np.inf, dtype=np.float32)
    step = max(1, CHUNK_VALUES // max(1, positions.shape[1] * vectors.shape[1]))
    for start in range(0, len(queries), step):
        rows = slice(start, start + step)
        at = positions[rows]
        q = queries[rows].astype(np.float64)[:, None, :]
        d = vectors[np.maximum(at, 0)].astype(np.float64)
        out[rows] = np.where(at >= 0, (q * d).sum(axis=2), -np.inf).astype(np.float32)
    return out


def canonical_order(positions: np.ndarray, scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """Per row, the column order: score descending, then id ascending; padding last."""
    rank = np.where(positions >= 0, id_rank[np.maximum(positions, 0)], np.iinfo(np.int64).max)
    return np.lexsort((rank, -scores.astype(np.float64)), axis=1)


def _sorted(positions: np.ndarray, scores: np.ndarray, id_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = canonical_order(positions, scores, id_rank)
    return np.take_along_axis(positions, order, axis=1), np.take_along_axis(scores, order, axis=1)


def from_search(queries: np.ndarray, vectors: np.ndarray, id_rank: np.ndarray, faiss_scores: np.ndarray,
                faiss_positions: np.ndarray, complete: bool) -> CandidateLists:
    """Lists from a FAISS top-``D`` search (positions in the pool ``vectors``): rescored
    canonically, the bound from FAISS's last score; none when the search returned every
    document it searched (``complete``)."""
    scores = canonical_scores(queries, vectors, faiss_positions)
    positions, scores = _sorted(faiss_positions, scores, id_rank)
    last = faiss_scores[:, -1].astype(np.float32)
    bound = np.full(len(queries), -np.inf, np.float32) if complete else last + np.float32(TOLERANCE)
    return CandidateLists(positions, scores, bound)


def raised(lists: CandidateLists, best_new: np.ndarray) -> CandidateLists:
    """A kept list whose query the edit could not reach: documents that joined or changed
    are not in it, and each scored at most ``best_new`` (float32, from ``miners.reach``)."""
    return CandidateLists(lists.positions, lists.scores,
                          np.maximum(lists.bound, best_new.astype(np.float32) + np.float32(TOLERANCE)))


def searched(queries: np.ndarray, vectors: np.ndarray, id_rank: np.ndarray, search, width: int,
             depth: int) -> CandidateLists:
    """Lists from a full search: ``search(queries, k)`` (FAISS over ``vectors``) returns
    (scores, positions); a list that fails the test (its ``depth``-th score ties what FAISS
    may have cut) is rebuilt from every document."""
    k = min(width, len(vectors))
    scores, positions = search(queries, k)
    lists = from_search(queries, vectors, id_rank, scores, positions, complete=k >= len(vectors))
    failing = np.flatnonzero(~lists.exact(min(depth, k)))
    if len(failing):
        rebuilt = brute_force(queries[failing], vectors, id_rank, k)
        lists.positions[failing], lists.scores[failing], lists.bound[failing] = (rebuilt.positions, rebuilt.scores,
                                                                                rebuilt.bound)
    return lists


def brute_force(queries: np.ndarray, vectors: np.ndarray, id_rank: np.ndarray, width: int) -> CandidateLists:
    """Lists from every pool document: the reference, and the rebuild of a list that fails."""
    everyone = np.broadcast_to(np.arange(len(vectors)), (len(queries), len(vectors)))
    positions, scores = _sorted(everyone.copy(), canonical_scores(queries, vectors, everyone), id_rank)
    width = min(width, len(vectors))
    bound = scores[:, width] if width < len(vectors) else np.full(len(queries), -np.inf, np.float32)
    return CandidateLists(positions[:, :width], scores[:, :width], bound.astype(np.float32))


def compact(lists: CandidateLists) -> CandidateLists:
    """Padding (-1, from documents that are gone) moved to the end of each row, order kept;
    the bound is unchanged: a document that is gone cannot outrank anything."""
    keep = lists.positions >= 0
    order = np.argsort(~keep, axis=1, kind="stable")
    positions = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(lists.positions, order, axis=1),
                         -1)
    scores = np.where(positions >= 0, np.take_along_axis(lists.scores, order, axis=1), -np.inf).astype(np.float32)
    return CandidateLists(positions, scores, lists.bound)


def drop(lists: CandidateLists, gone: np.ndarray) -> CandidateLists:
    """``lists`` without the positions ``gone`` marks (bool per pool position), compacted."""
    at = lists.positions
    return compact(CandidateLists(np.where((at >= 0) & gone[np.maximum(at, 0)], -1, at), lists.scores, lists.bound))


def merge(kept: CandidateLists, joined: CandidateLists, id_rank: np.ndarray, width: int) -> CandidateLists:
    """Two lists of the same queries over disjoint documents, merged and trimmed to
    ``width``; the bound covers both bounds and what the trim cut."""
    positions, scores = _sorted(np.concatenate([kept.positions, joined.positions], axis=1),
                                np.concatenate([kept.scores, joined.scores], axis=1), id_rank)
    bound = np.maximum(kept.bound, joined.bound)
    if positions.shape[1] > width:
        bound = np.maximum(bound, scores[:, width])
    return CandidateLists(positions[:, :width], scores[:, :width], bound.astype(np.float32))


def remap(lists: CandidateLists, old_to_new: np.ndarray) -> CandidateLists:
    """Lists over a previous pool as lists over the current one: positions moved, the
    documents that are gone (-1 in ``old_to_new``) dropped, compacted."""
    at = lists.positions
    moved = np.where(at >= 0, old_to_new[np.maximum(at, 0)], -1)
    return compact(CandidateLists(moved, np.where(moved >= 0, lists.scores, -np.inf).astype(np.float32), lists.bound))
