"""The selection stage's class and the writers' split, in process (the Ray run is in test_mine_ray)."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from miners.select import IS_POSITIVE, SelectionConfig
from pipelines.mine_config import TaskPlan
from pipelines.mine_search import QUERY_SCHEMA
from pipelines.mine_select import NEGATIVE, NEGATIVE_SCHEMA, QUERY, REJECTED, REJECTION_SCHEMA, SelectNegatives
from pipelines.mine_write import split_selected

POOL = pa.table({"id": [f"d{i}" for i in range(6)], "text": [f"text {i}" for i in range(6)],
                 "hash": [f"h{i}" for i in range(6)], "label": pa.nulls(6, pa.string())})


def _queries():
    rows = {"task": ["t", "t"], "task_type": ["retrieval"] * 2, "example_id": ["t:q1", "t:q2"],
            "query": ["q one", "q two"], "label": [None, None], "positive_positions": [[0], [5]],
            "positive_scores": [[0.9], [0.3]], "self_position": [None, None],
            "cand_positions": [[0, 1, 2, 3], [5, 4]], "cand_scores": [[0.9, 0.86, 0.8, 0.5], [0.3, 0.29]],
            "cross_positions": [[], []], "kth_score": [0.1, 0.2]}
    return pa.Table.from_pydict(rows, schema=QUERY_SCHEMA)


def test_selection_rows_of_three_kinds():
    plans = {"t": TaskPlan("t", "retrieval", "corpus", SelectionConfig(num_negatives=2))}
    out = SelectNegatives({"corpus": POOL}, plans, "teacher#fp", "run-1")(_queries())
    assert Counter(zip(out.column("example_id").to_pylist(), out.column("row_kind").to_pylist())) == {
        ("t:q1", NEGATIVE): 2, ("t:q1", REJECTED): 2, ("t:q1", QUERY): 1,
        ("t:q2", REJECTED): 2, ("t:q2", QUERY): 1}
    queries = split_selected(out, QUERY).to_pylist()
    assert queries[0] == {"task": "t", "example_id": "t:q1", "positive_score": pytest.approx(0.9),
                          "threshold": pytest.approx(0.855)}  # computed once, by select_for_query
    negatives = split_selected(out, NEGATIVE)
    assert negatives.schema == NEGATIVE_SCHEMA
    assert negatives.column("neg_id").to_pylist() == ["d2", "d3"] and set(negatives.column("run_id").to_pylist()) == {
        "run-1"}
    rejected = split_selected(out, REJECTED)
    assert rejected.schema == REJECTION_SCHEMA
    assert rejected.column("reason").to_pylist() == [IS_POSITIVE, "above_threshold", IS_POSITIVE, "above_threshold"]


def test_scores_cast_at_the_writer_equal_those_written_as_float32_before():
    """The stage keeps positive scores and thresholds in float64 and the writers cast them;
    the bytes must equal those of converting the Python floats to float32 directly."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(-0.2, 1.0, 20_000).astype(np.float32).tolist()
    thresholds = [s - abs(s) * (1 - 0.95) for s in scores]  # topk_perc_pos, as select_for_query computes it
    for values in (scores, thresholds):
        assert pa.array(values, pa.float64()).cast(pa.float32()).equals(pa.array(values, pa.float32()))


def test_candidate_list_columns_equal_the_python_list_reference():
    """The vectorised candidate columns against building them from Python lists."""
    from pipelines.mine_search import list_column

    rng = np.random.default_rng(0)
    positions = rng.integers(0, 10_000, size=(7, 5))
    scores = rng.standard_normal((7, 5)).astype(np.float32)
    for matrix, value_type in ((positions, pa.int64()), (scores, pa.float32())):
        reference = pa.array(matrix.tolist(), type=pa.list_(value_type))
        for rows_per_chunk in (3, 7, 100):  # chunk boundaries inside, at and past the end
            column = list_column(matrix, value_type, rows_per_chunk)
            assert column.type == pa.list_(value_type)
            assert column.combine_chunks().equals(reference)
    empty = list_column(np.empty((0, 5), np.int64), pa.int64())
    assert len(empty) == 0 and empty.type == pa.list_(pa.int64())
