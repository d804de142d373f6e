"""The mining report, from hand-made selection output: counts and summaries are read, never recomputed."""

import numpy as np
import pyarrow as pa

from miners.report import TaskInfo, build_report, format_report, task_scores, to_json
from miners.select import ABOVE_THRESHOLD, IS_POSITIVE, SAME_CLASS


def _inputs():
    tasks = {"ret": TaskInfo("retrieval", "topk_perc_pos", depth=5, queries=4, skipped={"positive_not_in_pool": 1}),
             "cls": TaskInfo("classification", "topk", depth=5, queries=1, skipped={})}
    queries = pa.table({"task": ["ret", "ret", "ret", "cls"], "example_id": ["r1", "r2", "r3", "c1"],
                        "positive_score": [0.8, 0.6, 0.5, 0.2], "threshold": [0.76, 0.57, 0.475, None]})
    negatives = pa.table({"task": ["ret"] * 3 + ["cls"] * 2, "example_id": ["r1", "r1", "r2", "c1", "c1"],
                          "neg_score": [0.7, 0.6, 0.5, 0.4, 0.3]})
    rejections = pa.table({"task": ["ret", "ret", "ret", "cls"],
                           "reason": [IS_POSITIVE, ABOVE_THRESHOLD, ABOVE_THRESHOLD, SAME_CLASS],
                           "cand_score": [0.8, 0.78, 0.9, 0.5]})
    return tasks, queries, negatives, rejections


def test_report_counts_and_summaries():
    tasks, queries, negatives, rejections = _inputs()
    scores = task_scores(queries, negatives, rejections)
    report = build_report(tasks, queries, negatives, rejections, scores, num_negatives=2)
    ret, cls = report["ret"], report["cls"]
    assert (ret.queries, ret.queries_mined, ret.negatives, ret.queries_with_negatives) == (4, 3, 3, 2)
    assert (ret.queries_short, ret.queries_without_negatives) == (2, 1)  # r2 has 1 of 2; r3 none
    assert ret.queries_skipped == {"positive_not_in_pool": 1} and ret.depth == 5 and ret.strategy == "topk_perc_pos"
    assert ret.rejected == {IS_POSITIVE: 1, ABOVE_THRESHOLD: 2}
    # The threshold summary is of the thresholds selection wrote, one per query that has one.
    assert ret.threshold == {"n": 3, "mean": round(np.mean([0.76, 0.57, 0.475]), 4), "p10": 0.494, "p50": 0.57,
                             "p90": 0.722}
    assert cls.threshold == {"n": 0} and cls.rejected == {SAME_CLASS: 1} and cls.queries_short == 0
    assert ret.rejected_above_threshold_score["n"] == 2 and ret.positive_score["p50"] == 0.6
    assert np.array_equal(scores["ret"].above, [0.78, 0.9])
    table = format_report(report).splitlines()
    assert table[0].split()[:3] == ["task", "queries", "mined"] and table[1].startswith("ret ")
    assert b'"queries_short": 2' in to_json(report)


def _reference_task_scores(queries, negatives, rejections):
    """task_scores row by row: the definition the Arrow version must keep."""
    lists = {}

    def of(task):
        return lists.setdefault(task, {"positive": [], "thresholds": [], "negative": [], "above": []})

    for task, pos, threshold in zip(*(queries.column(c).to_pylist() for c in ("task", "positive_score", "threshold"))):
        of(task)["positive"].append(pos)
        if threshold is not None:
            of(task)["thresholds"].append(threshold)
    for task, score in zip(negatives.column("task").to_pylist(), negatives.column("neg_score").to_pylist()):
        of(task)["negative"].append(score)
    for task, reason, score in zip(*(rejections.column(c).to_pylist() for c in ("task", "reason", "cand_score"))):
        if reason == ABOVE_THRESHOLD:
            of(task)["above"].append(score)
    return {t: {k: np.asarray(v, dtype=np.float64) for k, v in d.items()} for t, d in lists.items()}


def test_task_scores_equal_the_row_by_row_reference():
    rng = np.random.default_rng(0)

    def scores(n, null_share):
        return [None if rng.random() < null_share else float(rng.random()) for _ in range(n)]

    # Task "d" has only above-threshold rejections, "e" only other rejections (no entry).
    queries = pa.table({"task": rng.choice(["a", "b", "c"], 300).tolist(), "positive_score": scores(300, 0.05),
                        "threshold": scores(300, 0.3)})
    negatives = pa.table({"task": rng.choice(["a", "b"], 900).tolist(), "neg_score": scores(900, 0.02)})
    tasks = rng.choice(["a", "c", "d", "e"], 2000).tolist()
    reasons = [ABOVE_THRESHOLD if t != "e" and rng.random() < 0.4 else SAME_CLASS for t in tasks]
    rejections = pa.table({"task": tasks, "reason": reasons, "cand_score": scores(2000, 0.0)})
    got, expected = task_scores(queries, negatives, rejections), _reference_task_scores(queries, negatives, rejections)
    assert sorted(got) == sorted(expected) == ["a", "b", "c", "d"]
    for task, columns in expected.items():
        for name, values in columns.items():
            assert np.array_equal(getattr(got[task], name), values, equal_nan=True), (task, name)
