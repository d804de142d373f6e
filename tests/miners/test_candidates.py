"""Candidate lists kept across edits against a canonical search of every document, on random
pools with duplicate vectors (ties), over several rounds of adds, deletes and changes."""

import faiss
import numpy as np
import pytest

from miners.candidates import (
    CandidateLists,
    brute_force,
    canonical_scores,
    from_search,
    merge,
    raised,
    remap,
    searched,
)
from miners.reach import max_scores

DIM, DEPTH, WIDTH = 16, 6, 10


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _search(queries, vectors, id_rank, k, offset=None):
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    k = min(k, len(vectors))
    scores, positions = index.search(queries, k)
    positions = positions if offset is None else offset[positions]
    return scores, positions, k >= len(vectors)


def _full(queries, vectors, id_rank):
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return searched(queries, vectors, id_rank, index.search, WIDTH, DEPTH)


def _rows(lists: CandidateLists, depth):
    positions, scores = lists.top(depth)
    return positions.tolist(), scores.tolist()


def _check(lists, queries, vectors, id_rank, rows=None):
    """The lists (or those ``rows`` selects) have the reference's top DEPTH, position and bits."""
    reference = brute_force(queries, vectors, id_rank, DEPTH)
    for q in np.flatnonzero(np.ones(len(queries), bool) if rows is None else rows):
        assert lists.positions[q, :DEPTH].tolist() == reference.positions[q].tolist(), q
        assert lists.scores[q, :DEPTH].tobytes() == reference.scores[q].tobytes(), q


def test_canonical_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.standard_normal((200, DIM))), _unit(rng.standard_normal((30, DIM)))
    positions = rng.integers(0, 200, (30, 12))
    alone = np.stack([canonical_scores(queries[i:i + 1], vectors, positions[i:i + 1])[0] for i in range(30)])
    assert alone.tobytes() == canonical_scores(queries, vectors, positions).tobytes()
    reordered = positions[:, ::-1]
    assert canonical_scores(queries, vectors, reordered)[:, ::-1].tobytes() == alone.tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_lists_kept_across_edits_equal_a_search_of_every_document(seed):
    rng = np.random.default_rng(seed)
    base = _unit(rng.standard_normal((150, DIM)))
    n = 300
    vectors = base[rng.integers(0, 150, n)]  # each vector twice on average: exact ties
    ids = [f"d{i:05d}" for i in rng.permutation(10 * n)[:n]]
    queries = _unit(base[rng.integers(0, 150, 40)] + 0.05 * rng.standard_normal((40, DIM)))
    rank_of = lambda id_list: np.argsort(np.argsort(id_list, kind="stable"), kind="stable")  # noqa: E731
    id_rank = rank_of(ids)
    lists = _full(queries, vectors, id_rank)
    _check(lists, queries, vectors, id_rank)
    kept_exact = []
    for _round in range(4):
        # An edit: about 4% of the documents change text, 2% leave, 2% join (some as duplicates).
        change = rng.random(len(ids)) < 0.04
        leave = ~change & (rng.random(len(ids)) < 0.02)
        joined_count = max(1, int(0.02 * len(ids)))
        new_vectors = vectors.copy()
        new_vectors[change] = base[rng.integers(0, 150, int(change.sum()))]
        kept_rows = np.flatnonzero(~leave)
        fresh = base[rng.integers(0, 150, joined_count)]
        fresh_ids = [f"n{_round}-{i}" for i in range(joined_count)]
        vectors_now = np.concatenate([new_vectors[kept_rows], fresh])
        ids_now = [ids[i] for i in kept_rows] + fresh_ids
        old_to_new = np.full(len(ids), -1)
        old_to_new[kept_rows] = np.arange(len(kept_rows))
        old_to_new[change] = -1  # a changed document is dropped from every list and searched as new
        joined = np.concatenate([np.flatnonzero(change[kept_rows]), np.arange(len(kept_rows), len(ids_now))])
        id_rank = rank_of(ids_now)
        kept = remap(lists, old_to_new)
        # Half the queries are "reached" (merged with the joined documents), half kept as they were.
        reached = rng.random(len(queries)) < 0.5
        scores, positions, complete = _search(queries[reached], vectors_now[joined], id_rank, WIDTH, offset=joined)
        new = from_search(queries[reached], vectors_now, id_rank, scores, positions, complete)
        merged = merge(CandidateLists(kept.positions[reached], kept.scores[reached], kept.bound[reached]), new,
                       id_rank, WIDTH)
        best_new = max_scores(queries[~reached], vectors_now[joined])
        carried = raised(CandidateLists(kept.positions[~reached], kept.scores[~reached], kept.bound[~reached]),
                         best_new)
        lists = CandidateLists(np.full((len(queries), WIDTH), -1), np.full((len(queries), WIDTH), -np.inf, np.float32),
                               np.zeros(len(queries), np.float32))
        for part, rows in ((merged, reached), (carried, ~reached)):
            width = part.positions.shape[1]
            lists.positions[rows, :width], lists.scores[rows, :width], lists.bound[rows] = (
                part.positions, part.scores, part.bound)
        # What passes the test must be right already; what fails it is searched in full, as the mine does.
        failing = ~lists.exact(DEPTH)
        _check(lists, queries, vectors_now, id_rank, rows=~failing)
        kept_exact.append(1 - failing.mean())
        if failing.any():
            rebuilt = _full(queries[failing], vectors_now, id_rank)
            lists.positions[failing], lists.scores[failing], lists.bound[failing] = (
                rebuilt.positions, rebuilt.scores, rebuilt.bound)
        vectors, ids = vectors_now, ids_now
        _check(lists, queries, vectors, id_rank)
    assert np.mean(kept_exact) > 0.5  # most lists survive an edit without a full search


def test_a_deliberately_wrong_merge_is_caught():
    """The check above can fail: a merge that forgets the joined documents' bound gives
    lists that claim to be exact and are not."""
    rng = np.random.default_rng(1)
    vectors = _unit(rng.standard_normal((100, DIM)))
    queries = _unit(rng.standard_normal((20, DIM)))
    id_rank = np.arange(100)
    old = brute_force(queries, vectors[:80], id_rank, WIDTH)
    joined = np.arange(80, 100)
    scores, positions, _ = _search(queries, vectors[joined], id_rank, 2, offset=joined)
    new = from_search(queries, vectors, id_rank, scores, positions, complete=False)
    wrong = merge(old, CandidateLists(new.positions, new.scores, np.full(len(queries), -np.inf, np.float32)),
                  id_rank, WIDTH)
    with pytest.raises(AssertionError):
        _check(wrong, queries, vectors, id_rank, rows=wrong.exact(DEPTH))
    right = merge(old, new, id_rank, WIDTH)
    _check(right, queries, vectors, id_rank, rows=right.exact(DEPTH))
