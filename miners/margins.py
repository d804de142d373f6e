"""Which margin to choose: for each margin in a range, how many of a query's naive top-k
candidates the positive-aware threshold would reject, and the pairs at each cut.

NV-Retriever's 0.95 was tuned on one teacher's score scale; another teacher (or a judge)
puts its scores elsewhere. The listing reads what a mine already stored, with no encoding:
per query, the candidates that passed every rule except the threshold (the chosen
negatives and those rejected ``above_threshold``), in rank order. Everything before a
query's last chosen negative is one or the other, so the first ``k`` of them are exactly
the negatives plain top-k would have taken, whatever margin the mine itself used (a query
that ended short of negatives contributes the candidates it had).

Pure: ``margin_table`` takes arrays; pipelines/mine/margins.py reads the datasets.
Tested by tests/miners/test_margins.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from miners.select import SelectionConfig


@dataclass(frozen=True)
class Candidates:
    """One task's naive top-k candidates, one row each."""

    query: np.ndarray  # (n,) int64: which query
    score: np.ndarray  # (n,) float64: the candidate's score for the query
    positive_score: np.ndarray  # (n,) float64: the query's lowest positive score
    label: list[str]  # (n,) what a sample shows: the query and the candidate, as text


@dataclass
class Cut:
    margin: float
    rejected: int  # of the task's candidates
    queries_touched: int  # queries that lose at least one
    samples: list[tuple[float, str]] = field(default_factory=list)  # (score / positive score, label)


def naive_top_k(query: np.ndarray, rank: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first ``k`` candidates of each query by rank (rows in any order)."""
    order = np.lexsort((rank, query))
    q = query[order]
    starts = np.concatenate([[0], np.flatnonzero(q[1:] != q[:-1]) + 1])
    position = np.arange(len(q)) - np.repeat(starts, np.diff(np.concatenate([starts, [len(q)]])))
    return order[position < k]


def margin_table(cands: Candidates, margins: list[float], strategy: str = "topk_perc_pos",
                 samples: int = 2) -> list[Cut]:
    """One ``Cut`` per margin, in the order given. A cut's samples are candidates it rejects
    and the next (looser) margin in the list keeps: the pairs that margin decides."""
    ordered = sorted(margins)
    thresholds = {m: SelectionConfig(strategy=strategy, margin=m).thresholds(cands.positive_score) for m in ordered}
    cuts = {}
    for i, m in enumerate(ordered):
        above = cands.score > thresholds[m]
        cut = Cut(margin=m, rejected=int(above.sum()), queries_touched=len(np.unique(cands.query[above])))
        looser = thresholds[ordered[i + 1]] if i + 1 < len(ordered) else np.full(len(cands.score), np.inf)
        decided = np.flatnonzero(above & (cands.score <= looser))
        # The closest calls first: the highest score relative to the positive.
        ratio = cands.score[decided] / np.where(cands.positive_score[decided] == 0, np.nan,
                                                cands.positive_score[decided])
        for j in decided[np.argsort(-np.nan_to_num(ratio, nan=-np.inf), kind="stable")][:samples]:
            cut.samples.append((float(cands.score[j] / cands.positive_score[j]) if cands.positive_score[j] else
                                float("nan"), cands.label[j]))
        cuts[m] = cut
    return [cuts[m] for m in margins]
