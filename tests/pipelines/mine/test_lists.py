"""pipelines.mine.lists and the list-based reach test (reuse.search_masks) against their plain
references: the matmul reach of miners.reach, and the top-k before and after an edit."""

import numpy as np
import pyarrow as pa

from miners.candidates import brute_force
from miners.index import brute_force_topk
from miners.reach import reachable
from pipelines.mine.lists import left_upper, lists_table, stored_task
from pipelines.mine.reuse import ReachInputs, search_masks

DIM, DEPTH, WIDTH = 16, 8, 12


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _edit(rng, pool):
    """Delete 3, change 5, add 4: the current pool, old -> new positions, joined positions."""
    n = len(pool)
    deleted, changed = [3, 40, 77], [5, 50, 90, 120, 199]
    kept = [i for i in range(n) if i not in deleted]
    current = pool[kept].copy()
    old_to_new = np.full(n, -1, np.int64)
    for new, old in enumerate(kept):
        old_to_new[old] = -1 if old in changed else new
        if old in changed:
            current[new] = _unit(rng.standard_normal((1, DIM)))[0]
    current = np.vstack([current, _unit(rng.standard_normal((4, DIM)))])
    joined = [kept.index(c) for c in changed] + list(range(len(kept), len(kept) + 4))
    left = pool[deleted + changed]
    return current, old_to_new, joined, left


def _stored(rng):
    pool = _unit(rng.standard_normal((200, DIM)))
    pool[150] = pool[151]  # a duplicate: scores tie
    queries = _unit(rng.standard_normal((300, DIM)))
    id_rank = np.arange(len(pool))
    before = brute_force(queries, pool, id_rank, WIDTH)
    ids = [f"q{i}" for i in range(len(queries))]
    current, old_to_new, joined, left = _edit(rng, pool)
    table = lists_table("t", ids, before)
    return pool, queries, ids, before, current, old_to_new, joined, left, table


def test_list_reach_never_misses_a_query_whose_top_k_moved_and_agrees_with_the_matmul_reach():
    rng = np.random.default_rng(0)
    pool, queries, ids, before, current, old_to_new, joined, left, table = _stored(rng)
    kth = before.scores[:, DEPTH - 1]
    stored = stored_task(table, old_to_new, joined, WIDTH)
    reach = ReachInputs(previous_kth=kth, facts_changed=np.zeros(len(ids), bool), left=left,
                        joined_positions=joined, old_to_new=old_to_new)
    by_lists = search_masks({"t": reach}, {"t": "p"}, {"p": current}, {"t": queries}, {"t": stored}, {"t": ids})["t"]
    by_matmul = reachable(queries, kth, np.zeros(len(ids), bool), left, current[joined])
    _, old_top = brute_force_topk(queries, pool, DEPTH)
    _, new_top = brute_force_topk(queries, current, DEPTH)
    new_to_old = {n: o for o, n in enumerate(old_to_new) if n >= 0}
    moved = np.array([[int(p) for p in o] != [new_to_old.get(int(p), -1) for p in n]
                      for o, n in zip(old_top, new_top)])
    assert moved.any() and not (moved & ~by_lists).any()
    assert by_lists.tolist() == by_matmul.tolist()  # the bounds are tight here: the same queries
    assert stored.hits.scores.shape == (len(ids), len(joined)) and stored.hits.complete  # 9 joined, width 12
    assert np.allclose(stored.hits.best(), (queries @ current[joined].T).max(axis=1), atol=1e-6)


def test_a_left_document_outside_a_list_counts_at_the_list_bound():
    positions = np.array([[0, 1, 2], [3, 4, -1]])
    scores = np.array([[0.9, 0.8, 0.7], [0.6, 0.5, -np.inf]], np.float32)
    from miners.candidates import CandidateLists

    lists = CandidateLists(positions, scores, np.array([0.65, 0.1], np.float32))
    old_to_new = np.array([0, -1, 2, 3, 4, -1])  # 1 changed (in list 0); 5 left, outside both lists
    assert left_upper(lists, old_to_new).tolist() == [np.float32(0.8), np.float32(0.1)]
    assert left_upper(lists, np.arange(6)).tolist() == [-np.inf, -np.inf]  # nothing left


def test_lists_written_longer_are_cut_with_their_bound_raised():
    table = pa.table({"task": ["t"], "example_id": ["q"], "positions": [[4, 2, 7, 1]],
                      "scores": [[0.9, 0.8, 0.7, 0.6]], "bound": [0.5]},
                     schema=lists_table("t", [], brute_force(np.zeros((0, 2), np.float32),
                                                             np.zeros((3, 2), np.float32), np.arange(3), 2)).schema)
    stored = stored_task(table, np.arange(8), [], 2)
    assert stored.lists.positions.tolist() == [[4, 2]]
    assert stored.lists.bound.tolist() == [np.float32(0.7)]
