"""miners.drift on hand-made runs (each count follows from the rows), and against a
row-by-row reference on random runs (the module counts with Arrow)."""

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from miners.drift import (ADDED, CHANGED, REMOVED, SAME, MinedRun, TaskDrift, format_drift, plot_drift, query_drift,
                          task_drift)
from storage.schemas import DRIFT_SCHEMA


def _run(version, queries, negatives, flagged=(), texts=None):
    q = pa.table({"task": [r[0] for r in queries], "example_id": [r[1] for r in queries],
                  "positive_score": [r[2] for r in queries]})
    cols = {"task": [r[0] for r in negatives], "example_id": [r[1] for r in negatives],
            "neg_id": [r[2] for r in negatives], "neg_score": [r[3] for r in negatives]}
    if texts is not None:
        cols["neg_text"] = [texts[r[2]] for r in negatives]
    f = pa.table({"task": [r[0] for r in flagged], "example_id": [r[1] for r in flagged],
                  "cand_id": [r[2] for r in flagged]}, schema=pa.schema([(c, pa.string()) for c in
                                                                        ("task", "example_id", "cand_id")]))
    return MinedRun(version, q, pa.table(cols), f)


OLD_TEXT = {"d1": "t1", "d2": "t2", "d3": "t3", "d4": "t4", "d5": "t5"}


def _pool(texts: dict) -> pa.Table:
    return pa.table({"id": list(texts), "text": list(texts.values())})


def test_every_change_and_loss_is_counted():
    before = _run("v0001", [("t", "q1", 0.8), ("t", "q2", 0.7), ("t", "q3", 0.6), ("t", "gone", 0.5)],
                  [("t", "q1", "d1", 0.3), ("t", "q1", "d2", 0.2), ("t", "q2", "d3", 0.4), ("t", "q2", "d4", 0.3),
                   ("t", "q3", "d5", 0.1), ("t", "gone", "d1", 0.2)], flagged=[("t", "q2", "d9")], texts=OLD_TEXT)
    after = _run("v0002", [("t", "q1", 0.8), ("t", "q2", 0.7), ("t", "q3", 0.6), ("t", "new", 0.9)],
                 [("t", "q1", "d1", 0.3), ("t", "q1", "d2", 0.2), ("t", "q2", "d3", 0.4), ("t", "q2", "d6", 0.35),
                  ("t", "new", "d1", 0.5)], flagged=[("t", "q2", "d9"), ("t", "q3", "d8"), ("t", "new", "d7")])
    rows = query_drift(before, after)
    by_id = {r["example_id"]: r for r in rows.to_pylist()}
    assert by_id["q1"]["change"] == "same" and by_id["q1"]["jaccard"] == 1.0
    assert by_id["q2"]["change"] == "changed" and by_id["q2"]["jaccard"] == pytest.approx(1 / 3)
    assert by_id["q3"]["change"] == "changed" and by_id["q3"]["jaccard"] == 0.0 and by_id["q3"]["negatives"] == 0
    assert by_id["new"]["change"] == "added" and by_id["new"]["jaccard"] is None
    assert by_id["gone"]["change"] == "removed" and by_id["gone"]["negatives"] is None
    # d4 was deleted from the pool, d5's text changed; "gone"'s negative does not count (query removed).
    pool = _pool({"d1": "t1", "d2": "t2", "d3": "t3", "d5": "t5 edited", "d6": "t6"})
    (drift,) = task_drift(before, after, rows, {"t": pool}).values()
    assert (drift.same, drift.changed, drift.added, drift.removed) == (1, 2, 1, 1)
    assert drift.mean_jaccard_changed == pytest.approx((1 / 3 + 0) / 2, abs=1e-4)
    assert (drift.lost_to_deleted, drift.lost_to_changed) == (1, 1)
    assert drift.new_false_negatives == 1  # q3's d8; q2's d9 was flagged before; "new" was not mined before
    assert drift.positive_quantiles["before"][1] == pytest.approx(0.65)
    assert "v0001 -> v0002" in format_drift({"t": drift}, "v0001", "v0002")


# --- the row-by-row reference: the definitions of the module docstring, one query at a time.

def _sets(negatives: pa.Table) -> dict:
    out = defaultdict(set)
    for task, eid, nid in zip(*(negatives.column(c).to_pylist() for c in ("task", "example_id", "neg_id"))):
        out[(task, eid)].add(nid)
    return out


def _keys(queries: pa.Table) -> list:
    return list(zip(queries.column("task").to_pylist(), queries.column("example_id").to_pylist()))


def reference_query_drift(previous: MinedRun, new: MinedRun) -> list[dict]:
    before, now = _sets(previous.negatives), _sets(new.negatives)
    prev_keys, new_keys = _keys(previous.queries), _keys(new.queries)
    rows = []
    for key in new_keys:
        b, n = before.get(key, set()), now.get(key, set())
        if key not in set(prev_keys):
            rows.append((*key, ADDED, None, None, len(n)))
        else:
            union = b | n
            rows.append((*key, SAME if b == n else CHANGED, len(b & n) / len(union) if union else 1.0, len(b), len(n)))
    rows += [(*key, REMOVED, None, len(before.get(key, set())), None) for key in prev_keys if key not in set(new_keys)]
    return [dict(zip(DRIFT_SCHEMA.names, (*r, previous.version, new.version))) for r in rows]


def reference_task_drift(previous: MinedRun, new: MinedRun, rows: list[dict], pools: dict) -> dict:
    out = defaultdict(TaskDrift)
    jaccards, in_both = defaultdict(list), set()
    for r in rows:
        d = out[r["task"]]
        setattr(d, r["change"], getattr(d, r["change"]) + 1)
        if r["change"] == CHANGED:
            jaccards[r["task"]].append(r["jaccard"])
        if r["change"] in (SAME, CHANGED):
            in_both.add((r["task"], r["example_id"]))
    for task, values in jaccards.items():
        out[task].mean_jaccard_changed = round(float(np.mean(values)), 4)
    for label, run in (("before", previous), ("after", new)):
        for attr, table, column in (("positive_quantiles", run.queries, "positive_score"),
                                    ("negative_quantiles", run.negatives, "neg_score")):
            by_task = defaultdict(list)
            for task, v in zip(table.column("task").to_pylist(), table.column(column).to_pylist()):
                if v is not None:
                    by_task[task].append(v)
            for task, values in by_task.items():
                getattr(out[task], attr)[label] = [round(float(q), 4) for q in np.quantile(values, (0.1, 0.5, 0.9))]
    flagged_before = set(zip(*(previous.flagged.column(c).to_pylist() for c in ("task", "example_id", "cand_id"))))
    for key in zip(*(new.flagged.column(c).to_pylist() for c in ("task", "example_id", "cand_id"))):
        if key[:2] in in_both and key not in flagged_before:
            out[key[0]].new_false_negatives += 1
    now = _sets(new.negatives)
    texts = {t: dict(zip(p.column("id").to_pylist(), p.column("text").to_pylist())) for t, p in pools.items()}
    for task, eid, nid, text in zip(*(previous.negatives.column(c).to_pylist()
                                      for c in ("task", "example_id", "neg_id", "neg_text"))):
        if (task, eid) not in in_both or nid in now.get((task, eid), ()):
            continue
        current = texts.get(task, {}).get(nid)
        if current is None:
            out[task].lost_to_deleted += 1
        elif current != text:
            out[task].lost_to_changed += 1
    return dict(sorted(out.items()))


def _random_run(rng, version: str, with_text: bool, n_queries: int) -> MinedRun:
    tasks = ["a", "b", "c"]
    queries = [(str(rng.choice(tasks)), f"q{i}", None if rng.random() < 0.05 else float(rng.random()))
               for i in rng.choice(n_queries + 8, n_queries, replace=False)]
    queries = list({(t, e): (t, e, s) for t, e, s in queries}.values())
    negatives, flagged = [], []
    for task, eid, _ in queries:
        for d in rng.choice(12, int(rng.integers(0, 5)), replace=True):  # duplicates and empty sets included
            negatives.append((task, eid, f"d{d}", None if rng.random() < 0.05 else float(rng.random())))
        flagged += [(task, eid, f"d{d}") for d in rng.choice(12, int(rng.integers(0, 3)))]
    return _run(version, queries, negatives, flagged,
                texts={f"d{d}": f"text {d}" for d in range(12)} if with_text else None)


@pytest.mark.parametrize("seed", range(8))
def test_arrow_counts_equal_the_row_by_row_reference(seed):
    rng = np.random.default_rng(seed)
    before, after = _random_run(rng, "v0001", True, 40), _random_run(rng, "v0002", False, 40)
    # Some documents deleted (d10, d11 gone), some edited (d0, d1), for task "a"; task "c" has no pool.
    pool = _pool({f"d{d}": f"text {d}" + (" edited" if d < 2 else "") for d in range(10)})
    pools = {"a": pool, "b": _pool({f"d{d}": f"text {d}" for d in range(12)})}
    rows = query_drift(before, after)
    expected = reference_query_drift(before, after)
    assert rows.schema == DRIFT_SCHEMA
    assert rows.to_pylist() == expected
    assert task_drift(before, after, rows, pools) == reference_task_drift(before, after, expected, pools)
    if seed == 0:
        assert plot_drift(rows, before, after).startswith(b"\x89PNG")


def test_one_run_against_itself_is_all_same():
    run = _random_run(np.random.default_rng(3), "v0001", True, 30)
    rows = query_drift(run, run)
    assert set(rows.column("change").to_pylist()) == {SAME}
    pool = _pool({f"d{d}": f"text {d}" for d in range(12)})
    for d in task_drift(run, run, rows, {t: pool for t in "abc"}).values():
        assert (d.changed, d.added, d.removed, d.new_false_negatives, d.lost_to_deleted) == (0, 0, 0, 0, 0)
