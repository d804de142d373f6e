"""mteb's evaluators on Quarry's task classes, checked against results worked out by hand."""

import math

import mteb
import numpy as np
import pytest

from evaluation.encoder import LookupEncoder, MissingEmbedding
from evaluation.mteb_tasks import TaskData, mteb_task


def _encoder(vectors: dict[str, list[float]], instructions=None) -> LookupEncoder:
    keys = list(vectors)
    matrix = np.array([vectors[k] for k in keys], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    # key = instruction + text, so a test can see which side got the instruction
    return LookupEncoder("hand", "v0", matrix.shape[1], matrix, {k: i for i, k in enumerate(keys)},
                         lambda ins, text: ins + text, instructions or {})


def _scores(encoder, data: TaskData) -> dict:
    result = mteb.evaluate(encoder, tasks=[mteb_task(data)], cache=None, show_progress_bar=False, raise_error=True)
    return result.task_results[0].scores[data.split][0]


def test_retrieval_ndcg_recall_mrr_match_a_hand_computed_ranking():
    # Documents are the 5 unit vectors, so a query's scores are its own coordinates.
    docs = {f"d{i}": [float(i == j) for j in range(5)] for i in range(5)}
    queries = {
        "q0": [5, 4, 3, 2, 1],  # ranks d0 d1 d2 d3 d4: relevant d0 at rank 1
        "q1": [5, 1, 2, 4, 3],  # ranks d0 d3 d4 d2 d1: relevant d3 at rank 2
        "q2": [5, 1, 2, 4, 3],  # same ranking: relevant d4 at rank 3
    }
    data = TaskData(name="hand-retrieval", task_type="retrieval", split="test", instruction="Q: ",
                    queries={q: q for q in queries}, corpus={d: d for d in docs},
                    qrels={"q0": {"d0": 1}, "q1": {"d3": 1}, "q2": {"d4": 1}})
    vectors = {**docs, **{"Q: " + q: v for q, v in queries.items()}}  # queries carry the instruction, docs not
    scores = _scores(_encoder(vectors, {"hand-retrieval": "Q: "}), data)
    # one relevant document per query: nDCG = 1 / log2(rank + 1); ideal DCG = 1
    ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3
    assert scores["ndcg_at_10"] == pytest.approx(ndcg, abs=1e-5)  # 0.71031
    assert scores["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3, abs=1e-5)
    assert scores["recall_at_1"] == pytest.approx(1 / 3, abs=1e-5)
    assert scores["recall_at_10"] == 1.0 and scores["main_score"] == scores["ndcg_at_10"]


def test_classification_accuracy_and_clustering_v_measure_on_separable_classes():
    rng = np.random.default_rng(0)
    centres = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1]}
    vectors, train, test = {}, [], []
    for label, centre in centres.items():
        for i in range(30):
            text = f"{label}{i}"
            vectors["I: " + text] = list(np.array(centre) + rng.normal(0, 0.05, 3))
            (train if i < 20 else test).append((text, label))
    cls = TaskData(name="hand-cls", task_type="classification", split="test", instruction="I: ",
                   train_texts=[t for t, _ in train], train_labels=[x for _, x in train],
                   texts=[t for t, _ in test], labels=[x for _, x in test])
    enc = _encoder(vectors, {"hand-cls": "I: ", "hand-clu": "I: "})
    assert _scores(enc, cls)["accuracy"] == 1.0
    clu = TaskData(name="hand-clu", task_type="clustering", split="test", instruction="I: ",
                   texts=[t for t, _ in test + train], labels=[x for _, x in test + train])
    assert _scores(enc, clu)["v_measure"] == pytest.approx(1.0)


def test_a_text_that_was_not_embedded_beforehand_is_an_error_not_a_zero_vector():
    data = TaskData(name="hand-retrieval", task_type="retrieval", split="test", instruction="",
                    queries={"q0": "q0"}, corpus={"d0": "d0", "d1": "d1"}, qrels={"q0": {"d0": 1}})
    with pytest.raises(MissingEmbedding, match="1 of 1 query texts"):
        _scores(_encoder({"d0": [1.0, 0.0], "d1": [0.0, 1.0]}), data)
