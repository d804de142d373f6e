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
