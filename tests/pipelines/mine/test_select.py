"""The selection stage's class and the writers' split, in process (the Ray run is in test_mine_ray)."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from miners.select import IS_POSITIVE, QueryFacts, SelectionConfig, select_for_query
from pipelines.mine.config import TaskPlan
from pipelines.mine.search import QUERY_SCHEMA
from pipelines.mine.select import NEGATIVE, QUERY, REJECTED, SELECTED_SCHEMA, SelectedTexts, SelectNegatives
from pipelines.mine.texts import PoolTexts
from pipelines.mine.write import split_selected
from storage.schemas import NEGATIVE_SCHEMA, REJECTION_SCHEMA

POOL = pa.table({"id": [f"d{i}" for i in range(6)], "text": [f"text {i}" for i in range(6)],
                 "hash": [f"h{i}" for i in range(6)], "label": pa.nulls(6, pa.string()),
                 "source_id": [f"u{i}" for i in range(6)]})


def _queries():
    rows = {"task": ["t", "t"], "task_type": ["retrieval"] * 2, "example_id": ["t:q1", "t:q2"],
            "source_id": ["q1", "q2"],
            "query": ["q one", "q two"], "label": [None, None], "positive_positions": [[0], [5]],
            "positive_scores": [[0.9], [0.3]], "self_position": [None, None],
            "cand_positions": [[0, 1, 2, 3], [5, 4]], "cand_scores": [[0.9, 0.86, 0.8, 0.5], [0.3, 0.29]],
            "cross_positions": [[], []], "kth_score": [0.1, 0.2], "query_row": [0, 1], "positive_sims": [[], []],
            "judge_cand_scores": [[], []], "judge_positive_scores": [[], []]}
    return pa.Table.from_pydict(rows, schema=QUERY_SCHEMA)


def test_selection_rows_of_three_kinds():
    plans = {"t": TaskPlan("t", "retrieval", "corpus", SelectionConfig(num_negatives=2))}
    out = SelectNegatives({"corpus": POOL}, plans, "teacher#fp", "run-1")(_queries())
    assert Counter(zip(out.column("example_id").to_pylist(), out.column("row_kind").to_pylist())) == {
        ("t:q1", NEGATIVE): 2, ("t:q1", REJECTED): 2, ("t:q1", QUERY): 1,
        ("t:q2", REJECTED): 2, ("t:q2", QUERY): 1}
    texts = SelectedTexts(queries=_queries().column("query"),
                          pools=PoolTexts({"corpus": POOL.column("text")}, {"t": "corpus"}))
    queries = split_selected(out, QUERY).to_pylist()
    assert queries[0] == {"task": "t", "example_id": "t:q1", "positive_score": pytest.approx(0.9), "positive_judge_score": None,
                          "threshold": pytest.approx(0.855)}  # computed once, by select_for_query
    negatives = texts.join(split_selected(out, NEGATIVE), NEGATIVE_SCHEMA)
    assert negatives.schema == NEGATIVE_SCHEMA
    assert negatives.column("neg_text").to_pylist() == ["text 2", "text 3"]
    assert set(negatives.column("query").to_pylist()) == {"q one"}
    assert negatives.column("neg_id").to_pylist() == ["d2", "d3"] and set(negatives.column("run_id").to_pylist()) == {
        "run-1"}
    assert negatives.column("neg_source_id").to_pylist() == ["u2", "u3"]  # the user's own ids, to join back
    assert set(negatives.column("query_source_id").to_pylist()) == {"q1"}
    rejected = texts.join(split_selected(out, REJECTED), REJECTION_SCHEMA)
    assert rejected.schema == REJECTION_SCHEMA
    assert rejected.column("cand_text").to_pylist() == ["text 0", "text 1", "text 5", "text 4"]
    assert rejected.column("reason").to_pylist() == [IS_POSITIVE, "above_threshold", IS_POSITIVE, "above_threshold"]


def test_written_scores_and_thresholds_equal_the_per_query_reference_in_float32():
    """The stage keeps positive scores and thresholds in float64 and the writer casts them:
    what lands in ``negatives`` must be the float32 of what ``select_for_query`` computes."""
    rng = np.random.default_rng(0)
    n_queries, depth = 300, 6
    scores = np.sort(rng.uniform(-0.2, 1.0, (n_queries, depth)).astype(np.float32), axis=1)[:, ::-1]
    positive = rng.uniform(-0.2, 1.0, n_queries).astype(np.float32)
    rows = {"task": ["t"] * n_queries, "task_type": ["retrieval"] * n_queries,
            "example_id": [f"t:q{i}" for i in range(n_queries)], "source_id": [None] * n_queries,
            "query": [f"q {i}" for i in range(n_queries)],
            "label": [None] * n_queries, "positive_positions": [[0]] * n_queries,
            "positive_scores": [[float(s)] for s in positive], "self_position": [None] * n_queries,
            "cand_positions": [[1, 2, 3, 4, 5, 0][:depth]] * n_queries, "cand_scores": scores.tolist(),
            "cross_positions": [[]] * n_queries, "kth_score": scores[:, -1].tolist(),
            "query_row": list(range(n_queries)), "positive_sims": [[]] * n_queries,
            "judge_cand_scores": [[]] * n_queries, "judge_positive_scores": [[]] * n_queries}
    queries = pa.Table.from_pydict(rows, schema=QUERY_SCHEMA)
    cfg = SelectionConfig(num_negatives=2, confident_within=None)  # every query has its threshold
    plans = {"t": TaskPlan("t", "retrieval", "corpus", cfg)}
    out = SelectNegatives({"corpus": POOL}, plans, "teacher#fp", "r")(queries)
    texts = SelectedTexts(queries=queries.column("query"),
                          pools=PoolTexts({"corpus": POOL.column("text")}, {"t": "corpus"}))
    written = texts.join(split_selected(out, NEGATIVE), NEGATIVE_SCHEMA)
    facts = {f"t:q{i}": select_for_query(np.array(rows["cand_positions"][i]), scores[i],
                                         QueryFacts(f"t:q{i}", [0], [float(positive[i])]),
                                         POOL.column("hash").to_pylist(), None, cfg) for i in range(n_queries)}
    assert written.num_rows > n_queries  # most queries have their 2 negatives
    for eid, score, threshold in zip(*(written.column(c).to_pylist() for c in ("example_id", "positive_score",
                                                                              "threshold"))):
        query = int(eid.split("q")[1])
        assert score == np.float32(positive[query])
        assert threshold == np.float32(facts[eid].threshold)  # the same bits, not merely close


def test_candidate_list_columns_equal_the_python_list_reference():
    """The vectorised candidate columns against building them from Python lists."""
    from pipelines.mine.search import list_column

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
    narrow = list_column(np.empty((4, 0), np.float32), pa.float32())  # a column nothing fills: empty lists
    assert narrow.combine_chunks().equals(pa.array([[]] * 4, type=pa.list_(pa.float32())))


def _reference_rows(batch: pa.Table, pools: dict, plans: dict, judge: str | None = None) -> list[dict]:
    """The stage's rows built the plain way: ``select_for_query`` per query, a dict per row.
    With a judge, the rules read the judge's scores and the teacher's are written beside."""
    from miners.select import QueryFacts, select_for_query

    out = []
    for row in batch.to_pylist():
        plan = plans[row["task"]]
        pool = pools[plan.pool].to_pydict()
        ruling = ("judge_cand_scores", "judge_positive_scores") if judge else ("cand_scores", "positive_scores")
        facts = QueryFacts(example_id=row["example_id"], positive_positions=row["positive_positions"],
                           positive_scores=row[ruling[1]], self_position=row["self_position"],
                           label=row["label"], cross_positive_positions=frozenset(row["cross_positions"]))
        sel = select_for_query(np.asarray(row["cand_positions"]), np.asarray(row[ruling[0]], np.float32), facts,
                               pool["hash"], pool["label"] if plan.filters_same_class else None, plan.selection,
                               np.asarray(row["positive_sims"], np.float32))
        anchor = int(np.argmin(facts.positive_scores))
        base = {"task": plan.task, "task_type": plan.task_type, "example_id": row["example_id"],
                "query_source_id": row["source_id"], "query": row["query"],
                "positive_id": pool["id"][facts.positive_positions[anchor]],
                "positive_score": row["positive_scores"][anchor], "label": row["label"],
                "strategy": plan.selection.strategy,
                "threshold": sel.threshold if np.isfinite(sel.threshold) else None, "teacher": "t#1", "run_id": "r",
                "positive_judge_score": row["judge_positive_scores"][anchor] if judge else None, "judge": judge}
        for kind, cands in ((NEGATIVE, [(p, s, r, None) for p, s, r in sel.chosen]), (REJECTED, sel.rejected),
                            (QUERY, [(None, None, None, None)])):
            for p, s, r, why in cands:
                named = p is not None
                out.append({**base, "row_kind": kind, "neg_id": pool["id"][p] if named else None,
                            "neg_source_id": pool["source_id"][p] if named else None,
                            "neg_text": pool["text"][p] if named else None,
                            "neg_score": row["cand_scores"][r] if named else None, "neg_rank": r,
                            "neg_label": pool["label"][p] if named else None, "reason": why,
                            "neg_judge_score": row["judge_cand_scores"][r] if named and judge else None})
    return out


@pytest.mark.parametrize("judge", [None, "j#1"], ids=["teacher", "judged"])
def test_stage_rows_equal_the_per_query_reference(judge):
    """Two tasks in one batch (retrieval on a corpus, classification on its own examples,
    one sampling at random), candidate lists of uneven length: the vectorised stage writes
    the same rows as select_for_query row by row, kind by kind, in the same order."""
    rng = np.random.default_rng(7)
    n_docs, n_cls = 40, 30
    corpus = pa.table({"id": [f"d{i}" for i in range(n_docs)], "text": [f"doc {i}" for i in range(n_docs)],
                       "hash": [f"h{rng.integers(0, 25)}" for _ in range(n_docs)],
                       "label": pa.nulls(n_docs, pa.string()), "source_id": [f"s{i}" for i in range(n_docs)]})
    cls_labels = [["x", "y", "z"][rng.integers(0, 3)] for _ in range(n_cls)]
    examples = pa.table({"id": [f"c:{i}" for i in range(n_cls)], "text": [f"ex {i}" for i in range(n_cls)],
                         "hash": [f"e{i}" for i in range(n_cls)], "label": cls_labels,
                         "source_id": pa.nulls(n_cls, pa.string())})
    rows = []
    for task, size, labelled in (("ret", n_docs, False), ("cls", n_cls, True)):
        for q in range(25):
            depth = int(rng.integers(5, 12))
            cands = rng.permutation(size)[:depth]
            positives = [int(x) for x in rng.choice(size, size=int(rng.integers(1, 3)), replace=False)]
            rows.append({"task": task, "task_type": "classification" if labelled else "retrieval",
                         "example_id": f"c:{q}" if labelled else f"ret:{q}", "source_id": None,
                         "query": f"query {q}",
                         "label": cls_labels[q] if labelled else None, "positive_positions": positives,
                         "positive_scores": np.round(rng.uniform(0.3, 1, len(positives)), 2).tolist(),
                         "self_position": q if labelled else None, "cand_positions": cands.tolist(),
                         "cand_scores": np.sort(np.round(rng.uniform(0, 1, depth), 2))[::-1].tolist(),
                         "cross_positions": sorted({int(rng.integers(0, size))} - set(positives)),
                         "kth_score": 0.0, "query_row": len(rows),
                         "positive_sims": [] if labelled else np.round(rng.uniform(0, 1, depth), 1).tolist(),
                         "judge_cand_scores": np.round(rng.uniform(0, 1, depth), 2).tolist(),
                         "judge_positive_scores": np.round(rng.uniform(0.3, 1, len(positives)), 2).tolist()})
    batch = pa.Table.from_pylist(rows, schema=QUERY_SCHEMA)
    plans = {"ret": TaskPlan("ret", "retrieval", "corpus", SelectionConfig(num_negatives=3, confident_within=3,
                                                                           max_positive_similarity=0.7)),
             "cls": TaskPlan("cls", "classification", "cls",
                             SelectionConfig(strategy="topk_margin_pos", num_negatives=4, sampling="random"))}
    assert plans["cls"].filters_same_class and not plans["ret"].filters_same_class
    pools = {"corpus": corpus, "cls": examples}
    out = SelectNegatives(pools, plans, "t#1", "r", judge)(batch)
    assert out.schema == SELECTED_SCHEMA
    texts = SelectedTexts(queries=batch.column("query"),
                          pools=PoolTexts({n: t.column("text") for n, t in pools.items()},
                                          {t: p.pool for t, p in plans.items()}))
    reference = _reference_rows(batch, pools, plans, judge)
    for kind, schema in ((NEGATIVE, NEGATIVE_SCHEMA), (REJECTED, REJECTION_SCHEMA)):
        got = texts.join(split_selected(out, kind), schema)
        want = pa.Table.from_pylist([_as_dataset_row(r, kind) for r in reference if r["row_kind"] == kind])
        assert got.to_pylist() == want.select(schema.names).cast(schema).to_pylist(), kind
    queries = split_selected(out, QUERY).to_pylist()
    assert queries == [{"task": r["task"], "example_id": r["example_id"], "positive_score": r["positive_score"],
                        "positive_judge_score": r["positive_judge_score"], "threshold": r["threshold"]}
                       for r in reference if r["row_kind"] == QUERY]
    assert Counter(out.column("row_kind").to_pylist()) == Counter(r["row_kind"] for r in reference)
    assert {r["reason"] for r in reference if r["row_kind"] == REJECTED} >= {IS_POSITIVE, "same_class",
                                                                              "above_threshold", "similar_to_positive"}
    assert any(r["threshold"] is None for r in reference if r["task"] == "ret")  # an unsure teacher: no threshold


def test_positive_similarities_are_the_best_doc_doc_cosine():
    from pipelines.mine.search import positive_similarities

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((20, 8)).astype(np.float32)
    cands = np.array([[1, 2, 3], [4, 5, -1]])
    got = positive_similarities(vectors, cands, [[0], [6, 7]])
    assert np.allclose(got[0], vectors[[1, 2, 3]] @ vectors[0])
    assert np.allclose(got[1, :2], np.maximum(vectors[[4, 5]] @ vectors[6], vectors[[4, 5]] @ vectors[7]))


def _as_dataset_row(row: dict, kind: str) -> dict:
    """A reference row in its dataset's column names (rejections call the candidate cand_)."""
    row = {k: v for k, v in row.items() if k != "row_kind" and (kind == REJECTED or k != "reason")}
    return {k.replace("neg_", "cand_") if kind == REJECTED else k: v for k, v in row.items()}
