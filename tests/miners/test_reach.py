"""miners.reach against the plain reference: exact top-k before and after an edit."""

import numpy as np

from miners.index import brute_force_topk
from miners.reach import reachable


def _unit(rng, n, dim=16):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_every_query_whose_top_k_changes_is_reached_and_most_others_are_not():
    rng = np.random.default_rng(0)
    k = 10
    pool = _unit(rng, 400)
    queries = _unit(rng, 300)
    ids = list(range(400))
    deleted, edited = [3, 50, 77], [5, 120, 260, 399]
    new_pool = pool.copy()
    new_pool[edited] = _unit(rng, len(edited))
    added = _unit(rng, 4)
    keep = [i for i in ids if i not in deleted]
    after_vectors = np.vstack([new_pool[keep], added])
    after_ids = keep + [1000 + i for i in range(len(added))]
    before_scores, before_top = brute_force_topk(queries, pool, k)
    _, after_top = brute_force_topk(queries, after_vectors, k)
    changed = np.array([[ids[p] for p in b] != [after_ids[p] for p in a] for b, a in zip(before_top, after_top)])
    left = pool[deleted + edited]
    joined = np.vstack([new_pool[edited], added])
    reach = reachable(queries, before_scores[:, -1], np.zeros(len(queries), bool), left, joined)
    assert changed.any() and not (changed & ~reach).any()  # never misses a query whose top-k moved
    assert (~reach).sum() > len(queries) // 2  # and leaves most of the others alone


def test_new_queries_and_changed_facts_are_always_reached():
    rng = np.random.default_rng(1)
    queries = _unit(rng, 3)
    empty = np.zeros((0, 16), np.float32)
    kth = np.array([np.nan, 0.5, 0.5], np.float32)
    facts = np.array([False, True, False])
    assert reachable(queries, kth, facts, empty, empty).tolist() == [True, True, False]
