"""Choosing hard negatives among a query's teacher candidates.

One query at a time, pure: ``select_for_query`` takes the candidates (pool positions,
scores, in teacher rank order) and the facts about the query, and returns the chosen
negatives and every rejected candidate with its reason. The Ray stage and the tests call
the same function.

Strategies (NV-Retriever, arXiv 2407.15831), with ``margin`` read per strategy:

| strategy          | drops candidates that score above           | default margin |
|-------------------|----------------------------------------------|----------------|
| topk              | nothing                                      | -              |
| topk_shift        | (skips the first ``shift`` eligible ranks)   | -              |
| topk_abs          | margin (an absolute score)                   | 0.7            |
| topk_margin_pos   | min positive score - margin                  | 0.05           |
| topk_perc_pos     | margin * min positive score (the default)    | 0.95           |

(topk_perc_pos is computed as ``s - |s| * (1 - margin)``, the same for positive scores and
still below the positive when a weak teacher gives it a negative score.)

Always, before the strategy: the query's own positives (and, in class tasks, the query
itself) are removed; so are candidates whose text is identical to a positive's; in
classification and clustering tasks, candidates of the query's own class; and, unless
turned off, candidates that are positives of another query with the same (normalised)
text, which would be false negatives.

Two optional rules decide by what the candidate is rather than by its query score alone:

- ``max_positive_similarity``: drop a candidate whose teacher similarity to one of the
  query's positive documents (document against document) is above it, whatever it scores
  for the query: a paraphrase or near-duplicate of the positive (Negminer's doc-doc view);
- ``confident_within``: apply the strategy's threshold only to queries where the teacher
  ranks a positive among its first N candidates. Where it does not, the teacher is unsure
  of the query, and what it scores near the positive is mostly a true hard negative, which
  a threshold anchored on the positive would throw away. On by default (N = 1): in the
  negatives ablation (``docs/benchmarks.md``) it kept the threshold's gain where the teacher
  is strong and removed its loss where it is weak. ``None`` applies the threshold to every
  query, as NV-Retriever's rule does; strategies without a threshold ignore it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from storage import ConfigError, stable_rng

STRATEGIES = ("topk", "topk_shift", "topk_abs", "topk_margin_pos", "topk_perc_pos")
DEFAULT_MARGIN = {"topk": None, "topk_shift": None, "topk_abs": 0.7, "topk_margin_pos": 0.05,
                  "topk_perc_pos": 0.95}
SAMPLING = ("top", "random")

# Rejection reasons, in the order they are checked.
IS_POSITIVE = "is_positive"
DUPLICATE_OF_POSITIVE = "duplicate_of_positive"
SAME_CLASS = "same_class"
OTHER_QUERY_POSITIVE = "positive_of_same_query_text"
SIMILAR_TO_POSITIVE = "similar_to_positive"
SHIFTED = "shifted"
ABOVE_THRESHOLD = "above_threshold"
REASONS = (IS_POSITIVE, DUPLICATE_OF_POSITIVE, SAME_CLASS, OTHER_QUERY_POSITIVE, SIMILAR_TO_POSITIVE, SHIFTED,
           ABOVE_THRESHOLD)


@dataclass(frozen=True)
class SelectionConfig:
    strategy: str = "topk_perc_pos"
    margin: float | None = None  # None: the strategy's default (table above)
    shift: int = 10  # topk_shift: eligible ranks skipped
    num_negatives: int = 7
    sampling: str = "top"
    sample_window: int | None = None  # random: draw from the first W eligible (default all)
    seed: int = 0
    drop_cross_positives: bool = True
    max_positive_similarity: float | None = None  # None: off (module docstring)
    confident_within: int | None = 1  # None: the threshold applies to every query

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.sampling not in SAMPLING:
            raise ConfigError("sampling", f"must be top or random, got {self.sampling!r}")
        if self.num_negatives < 1:
            raise ConfigError("num_negatives", f"must be at least 1, got {self.num_negatives}")
        if self.margin is not None and DEFAULT_MARGIN[self.strategy] is None:
            raise ConfigError("margin", f"is not taken by strategy {self.strategy}, got {self.margin}")
        if self.strategy == "topk_perc_pos" and self.effective_margin is not None and not 0 < self.effective_margin <= 1:
            raise ConfigError("margin", f"of topk_perc_pos must be a fraction in (0, 1], got {self.effective_margin}")
        if self.strategy == "topk_shift" and self.shift < 0:
            raise ConfigError("shift", f"must be >= 0, got {self.shift}")
        if self.max_positive_similarity is not None and not -1 < self.max_positive_similarity <= 1:
            raise ConfigError("max_positive_similarity", f"must be a cosine in (-1, 1], got {self.max_positive_similarity}")
        if self.confident_within is not None and self.confident_within < 1:
            raise ConfigError("confident_within", f"must be at least 1 (or none: every query), got "
                                                  f"{self.confident_within}")
        if self.sample_window is not None and self.sample_window < self.num_negatives:
            raise ConfigError("sample_window", f"must be at least num_negatives ({self.num_negatives}), "
                                               f"got {self.sample_window}")

    @property
    def conditioned_on_confidence(self) -> bool:
        """Whether the threshold applies only where the teacher ranks a positive high."""
        return self.confident_within is not None and DEFAULT_MARGIN[self.strategy] is not None

    @property
    def effective_margin(self) -> float | None:
        return self.margin if self.margin is not None else DEFAULT_MARGIN[self.strategy]

    def threshold(self, min_positive_score: float) -> float:
        """Candidates scoring strictly above this are dropped (+inf: no threshold)."""
        return float(self.thresholds(np.array([min_positive_score], dtype=np.float64))[0])

    def thresholds(self, min_positive_scores: np.ndarray) -> np.ndarray:
        """``threshold`` of each query's lowest positive score (float64), as one array."""
        m = self.effective_margin
        s = np.asarray(min_positive_scores, dtype=np.float64)
        if self.strategy == "topk_abs":
            return np.full(s.shape, float(m))
        if self.strategy == "topk_margin_pos":
            return s - m
        if self.strategy == "topk_perc_pos":
            # s - |s|(1 - m) equals m*s for positive scores and stays below s for negative
            # ones, where m*s would lie above the positive (sentence-transformers #3819).
            return s - np.abs(s) * (1 - m)
        return np.full(s.shape, np.inf)


def normalized_query_key(text: str) -> str:
    """Near-duplicate key of a query: case, punctuation and spacing ignored."""
    return hashlib.sha256(re.sub(r"\W+", " ", text.casefold()).strip().encode()).hexdigest()[:32]


@dataclass
class QueryFacts:
    example_id: str
    positive_positions: list[int]  # pool positions of the query's positives
    positive_scores: list[float]  # teacher score of the query with each positive
    self_position: int | None = None  # class tasks: the query is itself in the pool
    label: str | None = None  # class tasks
    cross_positive_positions: frozenset = frozenset()  # positives of queries with the same text


@dataclass
class Selection:
    chosen: list[tuple[int, float, int]]  # (pool position, score, teacher rank)
    rejected: list[tuple[int, float, int, str]]  # (pool position, score, teacher rank, reason)
    threshold: float
    short: bool  # fewer than num_negatives eligible


def positive_rank(cand_positions: np.ndarray, positive_positions: list[int]) -> int | None:
    """The teacher's rank (0-based) of the query's best-ranked positive among its candidates,
    or None when no positive is among them."""
    positives = set(positive_positions)
    return next((rank for rank, pos in enumerate(cand_positions.tolist()) if pos in positives), None)


def select_for_query(cand_positions: np.ndarray, cand_scores: np.ndarray, facts: QueryFacts,
                     pool_hashes: list[str], pool_labels: list[str | None] | None,
                     cfg: SelectionConfig, cand_positive_sims: np.ndarray | None = None) -> Selection:
    """``cand_positive_sims``: each candidate's highest teacher similarity to one of the
    query's positive documents (needed by ``max_positive_similarity`` only)."""
    positives = set(facts.positive_positions)
    positive_hashes = {pool_hashes[p] for p in positives}
    threshold = cfg.threshold(min(facts.positive_scores)) if facts.positive_scores else float("inf")
    if cfg.conditioned_on_confidence:
        best = positive_rank(cand_positions, facts.positive_positions)
        if best is None or best >= cfg.confident_within:
            threshold = float("inf")  # an unsure teacher: no threshold for this query
    eligible: list[tuple[int, float, int]] = []
    rejected: list[tuple[int, float, int, str]] = []
    shifted = 0
    for rank, (pos, score) in enumerate(zip(cand_positions.tolist(), cand_scores.tolist())):
        if pos < 0:  # FAISS pads with -1 when it finds fewer than k
            continue
        if pos in positives or pos == facts.self_position:
            reason = IS_POSITIVE
        elif pool_hashes[pos] in positive_hashes:
            reason = DUPLICATE_OF_POSITIVE
        elif pool_labels is not None and facts.label is not None and pool_labels[pos] == facts.label:
            reason = SAME_CLASS
        elif cfg.drop_cross_positives and pos in facts.cross_positive_positions:
            reason = OTHER_QUERY_POSITIVE
        elif cfg.max_positive_similarity is not None and cand_positive_sims[rank] > cfg.max_positive_similarity:
            reason = SIMILAR_TO_POSITIVE
        elif cfg.strategy == "topk_shift" and shifted < cfg.shift:
            shifted += 1
            reason = SHIFTED
        elif score > threshold:
            reason = ABOVE_THRESHOLD
        else:
            eligible.append((pos, score, rank))
            continue
        rejected.append((pos, score, rank, reason))
    n = cfg.num_negatives
    if cfg.sampling == "top" or len(eligible) <= n:
        chosen = eligible[:n]
    else:
        window = eligible[: cfg.sample_window or len(eligible)]
        # Keyed on (seed, example id): the same draw on every run and every worker.
        picks = stable_rng(cfg.seed, facts.example_id).choice(len(window), size=min(n, len(window)), replace=False)
        chosen = [window[i] for i in sorted(picks)]
    return Selection(chosen=chosen, rejected=rejected, threshold=threshold, short=len(chosen) < n)
