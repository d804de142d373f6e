from collections import Counter, defaultdict

import pytest

from trainers.shards import TaskPacking, pack_batches


def _rows(task, task_type, n):
    return [{"task": task, "task_type": task_type, "example_id": f"{task}:{i}"} for i in range(n)]


@pytest.fixture
def packed():
    rows = {"ret": _rows("ret", "retrieval", 70), "cls": _rows("cls", "classification", 45),
            "clu": _rows("clu", "clustering", 16)}
    return pack_batches(rows, global_batch=8, workers=2, seed=0)


def test_each_global_batch_is_one_task_with_its_in_batch_flag(packed):
    rows, stats = packed
    batches = defaultdict(list)
    for r in rows:
        batches[r["batch_index"]].append(r)
    for members in batches.values():
        assert len({m["task"] for m in members}) == 1
        assert {m["in_batch"] for m in members} == {members[0]["task_type"] == "retrieval"}
        assert sorted(m["position"] for m in members) == list(range(8))
        assert Counter(m["worker"] for m in members) == {0: 4, 1: 4}  # split evenly across workers
    assert stats == {"cls": TaskPacking(examples=45, batches=5, dropped_incomplete=5),
                     "clu": TaskPacking(examples=16, batches=2, dropped_incomplete=0),
                     "ret": TaskPacking(examples=70, batches=8, dropped_incomplete=6)}


def test_no_example_twice_and_tasks_interleaved(packed):
    rows, _ = packed
    ids = [r["example_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 8 * 15
    order = [rows[i]["task"] for i in range(0, len(rows), 8)]
    assert order != sorted(order)  # batches of different tasks are interleaved


def test_packing_is_deterministic_given_the_seed(packed):
    rows = {"ret": _rows("ret", "retrieval", 70), "cls": _rows("cls", "classification", 45),
            "clu": _rows("clu", "clustering", 16)}
    again, _ = pack_batches(rows, 8, 2, seed=0)
    assert again == packed[0]
    other, _ = pack_batches(rows, 8, 2, seed=1)
    assert [r["example_id"] for r in other] != [r["example_id"] for r in packed[0]]
    shuffled_input = {k: list(reversed(v)) for k, v in rows.items()}
    assert pack_batches(shuffled_input, 8, 2, seed=0)[0] == packed[0]  # input order does not matter
