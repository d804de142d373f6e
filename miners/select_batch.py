"""Selection for many queries at once: the rules of ``miners.select`` as array operations.

``select_for_query`` (``miners.select``) is the reference: one query, a loop over its
candidates, easy to read. ``select_batch`` applies the same rules, in the same order, to
a (queries x depth) matrix of candidates with numpy, which is what the mining stage runs;
it spends no Python per candidate, only per query that ``random`` sampling draws for.
``tests/miners/test_select_batch.py`` holds it equal to the reference, query by query,
on random batches of every strategy and sampling mode.

Per-query lists (positives, their scores, other queries' positives) arrive as ``Ragged``:
one flat array and offsets, the layout of an Arrow list column. Texts and labels arrive as
integer codes (equal text hash, equal code), so that every comparison is an integer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from miners.select import ABOVE_THRESHOLD, REASONS, SHIFTED, SIMILAR_TO_POSITIVE, SelectionConfig
from storage import stable_rng

KEPT = 0  # eligible: chosen, or left over once enough were chosen
PADDING = -1  # FAISS found fewer than depth candidates
# A rejected candidate's code is 1 + the index of its reason in ``miners.select.REASONS``.
REASON_CODE = {reason: i + 1 for i, reason in enumerate(REASONS)}


@dataclass(frozen=True)
class Ragged:
    """One list per query, as a flat array of values and ``offsets`` (length queries + 1)."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence], dtype) -> "Ragged":
        lengths = np.fromiter((len(x) for x in lists), np.int64, len(lists))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.fromiter((v for x in lists for v in x), dtype, int(offsets[-1]))
        return cls(values, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row_of_each_value(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1), self.lengths)

    def with_values(self, values: np.ndarray) -> "Ragged":
        return Ragged(values, self.offsets)


@dataclass(frozen=True)
class CandidateBatch:
    """A batch of queries of one task, as the search left them."""

    positions: np.ndarray  # (Q, K) int64 pool positions in teacher rank order; -1 pads
    scores: np.ndarray  # (Q, K) float32 teacher scores
    positives: Ragged  # pool positions of each query's positives
    positive_scores: Ragged  # float32, the teacher's score of the query with each positive
    self_positions: np.ndarray  # (Q,) int64: the query's own pool position (class tasks), -1 none
    labels: np.ndarray  # (Q,) int64: the query's label code (class tasks), -1 none
    cross_positives: Ragged  # positives of other queries with the same normalised text
    example_ids: Sequence[str]  # random sampling's per-query seed
    positive_sims: np.ndarray | None = None  # (Q, K) float32: each candidate's best similarity to a positive


@dataclass(frozen=True)
class PoolCodes:
    """The candidate pool, as codes."""

    hashes: np.ndarray  # (P,) int64: equal text hashes, equal codes
    labels: np.ndarray | None  # (P,) int64 label codes, -1 none; None: no same-class filter


@dataclass
class BatchSelection:
    reasons: np.ndarray  # (Q, K) int8: KEPT, PADDING, or REASON_CODE of the rejection
    chosen: np.ndarray  # (Q, K) bool, in teacher rank order
    thresholds: np.ndarray  # (Q,) float64; +inf where the strategy (or a query without positives) has none
    short: np.ndarray  # (Q,) bool: fewer than num_negatives chosen
    anchors: np.ndarray  # (Q,) int64: index into positives.values of the lowest-scoring positive, -1 none

    def rejected(self) -> np.ndarray:
        return self.reasons > KEPT


def _in_own_list(candidates: np.ndarray, lists: Ragged) -> np.ndarray:
    """(Q, K) bool: ``candidates[q, k]`` is in the q-th list. Values are >= 0; a candidate
    of -1 (padding) is never found."""
    found = np.zeros(candidates.shape, dtype=bool)
    if lists.values.size == 0 or candidates.size == 0:
        return found
    # (query, value) pairs as one integer each; +1 keeps padding (-1) at 0, outside every list.
    width = int(max(candidates.max(), lists.values.max())) + 2
    rows = np.arange(candidates.shape[0], dtype=np.int64)[:, None]
    wanted = lists.row_of_each_value() * width + lists.values + 1
    return np.isin(rows * width + candidates + 1, wanted)


def _row_minima(lists: Ragged) -> tuple[np.ndarray, np.ndarray]:
    """Each row's minimum (+inf when empty) and the index in ``values`` of its first minimum (-1)."""
    n = len(lists.offsets) - 1
    minima = np.full(n, np.inf)
    first = np.full(n, -1, dtype=np.int64)
    filled = lists.lengths > 0
    if not filled.any():
        return minima, first
    # Empty rows hold no values, so each filled row's segment runs to the next filled row's start.
    minima[filled] = np.minimum.reduceat(lists.values, lists.offsets[:-1][filled]).astype(np.float64)
    rows = lists.row_of_each_value()
    at_min = np.flatnonzero(lists.values == minima[rows])
    rows_at_min, earliest = np.unique(rows[at_min], return_index=True)
    first[rows_at_min] = at_min[earliest]
    return minima, first


def select_batch(batch: CandidateBatch, pool: PoolCodes, cfg: SelectionConfig) -> BatchSelection:
    """``select_for_query`` for every query of ``batch`` (one task, one config)."""
    positions, n_queries = batch.positions, batch.positions.shape[0]
    valid = positions >= 0
    at = np.where(valid, positions, 0)  # a safe index for padding; its result is masked off
    is_positive = _in_own_list(positions, batch.positives) | (
        valid & (batch.self_positions[:, None] >= 0) & (positions == batch.self_positions[:, None]))
    duplicate = _in_own_list(np.where(valid, pool.hashes[at], -1),
                             batch.positives.with_values(pool.hashes[batch.positives.values]))
    if pool.labels is not None:
        same_class = valid & (batch.labels[:, None] >= 0) & (pool.labels[at] == batch.labels[:, None])
    else:
        same_class = np.zeros_like(valid)
    cross = _in_own_list(positions, batch.cross_positives) if cfg.drop_cross_positives else np.zeros_like(valid)
    # The first true condition names the reason, in the reference's order.
    reasons = np.select([~valid, is_positive, duplicate, same_class, cross],
                        [PADDING] + [REASON_CODE[r] for r in REASONS[:4]], default=KEPT).astype(np.int8)
    if cfg.max_positive_similarity is not None:
        reasons[(reasons == KEPT) & (batch.positive_sims > cfg.max_positive_similarity)] = REASON_CODE[
            SIMILAR_TO_POSITIVE]
    if cfg.strategy == "topk_shift":
        still_open = reasons == KEPT
        reasons[still_open & (np.cumsum(still_open, axis=1) <= cfg.shift)] = REASON_CODE[SHIFTED]
    min_positive, anchors = _row_minima(batch.positive_scores)
    has_positive = batch.positive_scores.lengths > 0
    thresholds = np.full(n_queries, np.inf)
    thresholds[has_positive] = cfg.thresholds(min_positive[has_positive])
    if cfg.conditioned_on_confidence:
        # The first candidate that is a positive (self excluded), or none: the threshold
        # applies only where it is within confident_within.
        true_positive = _in_own_list(positions, batch.positives)
        first = np.where(true_positive.any(axis=1), true_positive.argmax(axis=1), np.iinfo(np.int64).max)
        thresholds[first >= cfg.confident_within] = np.inf
    above = (reasons == KEPT) & (batch.scores.astype(np.float64) > thresholds[:, None])
    reasons[above] = REASON_CODE[ABOVE_THRESHOLD]

    eligible = reasons == KEPT
    n = cfg.num_negatives
    chosen = eligible & (np.cumsum(eligible, axis=1) <= n)
    if cfg.sampling == "random":
        for q in np.flatnonzero(eligible.sum(axis=1) > n):
            columns = np.flatnonzero(eligible[q])
            window = columns[: cfg.sample_window or len(columns)]
            # Keyed on (seed, example id), as in select_for_query: the same draw on every run.
            picks = stable_rng(cfg.seed, batch.example_ids[q]).choice(len(window), size=min(n, len(window)),
                                                                      replace=False)
            chosen[q] = False
            chosen[q, window[picks]] = True
    short = chosen.sum(axis=1) < n
    return BatchSelection(reasons=reasons, chosen=chosen, thresholds=thresholds, short=short, anchors=anchors)
