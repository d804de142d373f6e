"""miners.drift on hand-made runs: each count follows from the rows."""

import pyarrow as pa
import pytest

from miners.drift import MinedRun, format_drift, query_drift, task_drift


def _run(version, queries, negatives, flagged=(), hashes=None):
    q = pa.table({"task": [r[0] for r in queries], "example_id": [r[1] for r in queries],
                  "positive_score": [r[2] for r in queries]})
    cols = {"task": [r[0] for r in negatives], "example_id": [r[1] for r in negatives],
            "neg_id": [r[2] for r in negatives], "neg_score": [r[3] for r in negatives]}
    if hashes is not None:
        cols["neg_hash"] = [hashes[r[2]] for r in negatives]
    f = pa.table({"task": [r[0] for r in flagged], "example_id": [r[1] for r in flagged],
                  "cand_id": [r[2] for r in flagged]}, schema=pa.schema([(c, pa.string()) for c in
                                                                        ("task", "example_id", "cand_id")]))
    return MinedRun(version, q, pa.table(cols), f)


OLD_HASH = {"d1": "h1", "d2": "h2", "d3": "h3", "d4": "h4", "d5": "h5"}


def test_every_change_and_loss_is_counted():
    before = _run("v0001", [("t", "q1", 0.8), ("t", "q2", 0.7), ("t", "q3", 0.6), ("t", "gone", 0.5)],
                  [("t", "q1", "d1", 0.3), ("t", "q1", "d2", 0.2), ("t", "q2", "d3", 0.4), ("t", "q2", "d4", 0.3),
                   ("t", "q3", "d5", 0.1), ("t", "gone", "d1", 0.2)], flagged=[("t", "q2", "d9")], hashes=OLD_HASH)
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
    pool = {"d1": "h1", "d2": "h2", "d3": "h3", "d5": "h5-edited", "d6": "h6"}
    (drift,) = task_drift(before, after, rows, {"t": pool}).values()
    assert (drift.same, drift.changed, drift.added, drift.removed) == (1, 2, 1, 1)
    assert drift.mean_jaccard_changed == pytest.approx((1 / 3 + 0) / 2, abs=1e-4)
    assert (drift.lost_to_deleted, drift.lost_to_changed) == (1, 1)
    assert drift.new_false_negatives == 1  # q3's d8; q2's d9 was flagged before; "new" was not mined before
    assert drift.positive_quantiles["before"][1] == pytest.approx(0.65)
    assert "v0001 -> v0002" in format_drift({"t": drift}, "v0001", "v0002")
