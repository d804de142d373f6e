"""Which queries an edit of the candidate pool can reach: the rest keep last run's negatives.

Exact (flat) top-k search is a function of the query vector and the pool. When the query,
its positives and its labels are as they were, its top-k can only change if

- a document that left the pool, or whose text changed, was in its previous top-k: its
  previous vector scored at least the previous k-th score; or
- a document that joined the pool, or whose text changed, now scores at least that k-th
  score.

Otherwise the top-k is identical, candidates and ranks alike, and so is every fact
selection reads of them (their texts' hashes and labels), so the previous negatives and
rejections of that query are exactly what a full search would give again. Scores are
compared with a small tolerance (``EPSILON``) in the direction of re-searching: FAISS and
numpy may round the same inner product differently in the last bits.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-4


def max_scores(queries: np.ndarray, documents: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Per query, the best inner product with any of ``documents`` (-inf when there are none)."""
    out = np.full(len(queries), -np.inf, dtype=np.float32)
    if len(documents) == 0 or len(queries) == 0:
        return out
    for start in range(0, len(queries), chunk):
        out[start:start + chunk] = (queries[start:start + chunk] @ documents.T).max(axis=1)
    return out


def reachable(queries: np.ndarray, previous_kth: np.ndarray, facts_changed: np.ndarray, left: np.ndarray,
              joined: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """Boolean per query: True when it must be searched and selected again.

    ``queries``: the query vectors (unchanged queries have the vectors they had);
    ``previous_kth``: the k-th score of each query's previous search, NaN when it was not
    searched before (a new query, or one searched at another depth); ``facts_changed``:
    the query's text, positives or label changed, or a query of the same text did;
    ``left``: previous vectors of the documents that left the pool or changed text;
    ``joined``: current vectors of the documents that joined the pool or changed text.
    """
    return reached_by(previous_kth, facts_changed, max_scores(queries, left), max_scores(queries, joined), epsilon)


def reached_by(previous_kth: np.ndarray, facts_changed: np.ndarray, best_left: np.ndarray, best_joined: np.ndarray,
               epsilon: float = EPSILON) -> np.ndarray:
    """The same test, given per query the best previous score of a document that left (or
    any upper bound of it) and the best current score of one that joined (or an upper
    bound). A bound only ever reaches more queries than the exact best would, so the
    queries left unreached keep exactly what a full search would give.

    A re-mine with stored candidate lists (``miners.candidates``) takes ``best_left`` from
    them with no search: a document that left scored, canonically, what its list entry
    says if it is in the list, and at most the list's bound if not. ``best_joined`` is the
    first score of the search of the joined documents that updating the lists needs anyway.
    """
    kth = np.asarray(previous_kth, dtype=np.float32)
    must = np.isnan(kth) | np.asarray(facts_changed, dtype=bool)
    threshold = np.where(np.isnan(kth), np.inf, kth - epsilon)
    must |= np.asarray(best_left) >= threshold
    must |= np.asarray(best_joined) >= threshold
    return must
