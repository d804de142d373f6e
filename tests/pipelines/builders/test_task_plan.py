import pyarrow as pa
import pytest

from pipelines.builders.documents import content_hash
from pipelines.builders.positives import CorpusIndex
from pipelines.builders.task_plan import INDEX_COLUMNS, SAME_QUERY, plan_examples
from pipelines.builders.task_rows import WITH_STATUS, assign_split, build_task_rows
from pipelines.builders.task_spec import parse_task_set
from storage import InputError

SPEC = parse_task_set({
    "name": "ex", "corpus": "c", "seed": 0,
    "tasks": [
        {"name": "ret", "type": "retrieval", "source": {"corpus": "c"},
         "columns": {"query": "q", "positive_ids": "pos"}, "instruction": "Find the article"},
        {"name": "cls", "type": "classification", "source": {"corpus": "c"},
         "columns": {"text": "q", "label": "topic", "id": "id"}, "instruction": "Classify",
         "exclude_labels": ["Uncategorized"]},
        {"name": "sts", "type": "sts", "source": {"corpus": "c"},
         "columns": {"text1": "q", "text2": "q2", "score": "s"}},
    ],
})


def test_split_is_a_function_of_the_example_id_alone():
    splits = {"train": 0.8, "dev": 0.1, "test": 0.1}
    ids = [f"t:{i}" for i in range(2000)]
    first = [assign_split(i, 0, splits) for i in ids]
    assert first == [assign_split(i, 0, splits) for i in ids]
    # Adding rows (a refreshed dataset) never moves an old example.
    assert [assign_split(i, 0, splits) for i in ids[:100]] == first[:100]
    share = first.count("train") / len(first)
    assert 0.75 < share < 0.85
    assert first != [assign_split(i, 1, splits) for i in ids]


def test_retrieval_rows_get_instruction_and_status():
    batch = pa.table({"q": ["what is x", "", "y?"], "pos": ["d1", "d2", None]})
    out = build_task_rows(batch, SPEC.tasks[0], SPEC).to_pylist()
    assert out[0]["instruction"] == "Instruct: Find the article\nQuery: "
    assert out[0]["positive_ids"] == ["d1"] and out[0]["_status"] == "ok"
    assert out[1]["_status"] == "empty_query"
    assert out[2]["_status"] == "no_positive"
    assert out[0]["example_id"].startswith("ret:")


def test_wrong_types_name_the_task_and_field():
    with pytest.raises(InputError, match="task ret: field 'query' .* must be text, got int"):
        build_task_rows(pa.table({"q": [5], "pos": ["d"]}), SPEC.tasks[0], SPEC)
    with pytest.raises(InputError, match="task sts: field 'score' must be a number"):
        build_task_rows(pa.table({"q": ["a"], "q2": ["b"], "s": ["high"]}), SPEC.tasks[2], SPEC)


def _class_rows(labels, splits=None):
    n = len(labels)
    return {
        "task": ["cls"] * n, "task_type": ["classification"] * n, "example_id": [f"cls:{i}" for i in range(n)],
        "split": splits or ["train"] * n, "label": labels, "query": [f"text {i}" for i in range(n)],
        "positive_ids": [[] for _ in range(n)], "_status": ["ok"] * n,
    }


def _index(rows):
    n = len(rows["task"])
    defaults = {"source_id": [None] * n, "positive_grades": [None] * n, "positive": [None] * n}
    return pa.table({c: rows[c] if c in rows else defaults[c] for c in INDEX_COLUMNS},
                    schema=pa.schema([WITH_STATUS.field(c) for c in INDEX_COLUMNS]))


def test_class_pairs_are_same_class_same_split_never_self():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"]
    splits = ["train"] * 4 + ["test"] + ["train"] * 4
    rows = _class_rows(labels, splits)
    plan = plan_examples(_index(rows), SPEC, None)
    by_id = {eid: i for i, eid in enumerate(rows["example_id"])}
    partners = set()
    for i in range(len(labels)):
        if not plan.keep[i]:
            continue
        (partner,) = plan.positive_ids[i]
        j = by_id[partner]
        assert j != i and labels[j] == labels[i] and splits[j] == splits[i]
        assert plan.positive[i] == rows["query"][j]  # the positive is an example's text, not the label
        partners.add(partner)
    # "a"/test and "c" are alone in their group: counted, not paired with another class.
    assert plan.keep.tolist() == [True] * 4 + [False] + [True] * 3 + [False]
    assert plan.stats["cls"].skipped == {"singleton_class": 2}
    assert len(partners) == 7  # a cycle: every kept example is somebody's positive exactly once


def test_retrieval_positives_are_checked_against_the_corpus():
    rows = {"task": ["ret"] * 3, "task_type": ["retrieval"] * 3, "example_id": ["ret:1", "ret:2", "ret:3"],
            "split": ["train"] * 3, "label": [None] * 3, "query": [None] * 3,
            "positive_ids": [["d1"], ["d1", "zz"], ["zz"]], "_status": ["ok"] * 3}
    plan = plan_examples(_index(rows), SPEC, _corpus(["d1"]))
    assert plan.keep.tolist() == [True, True, False]
    assert plan.positive_ids[1] == ["d1"]
    assert plan.stats["ret"].skipped == {"positive_not_in_corpus": 1}
    assert plan.stats["ret"].positive_ids_not_in_corpus == 1


def test_duplicate_explicit_ids_are_an_error_derived_ones_are_dropped():
    rows = _class_rows(["a", "a", "a"])
    rows["example_id"] = ["cls:1", "cls:1", "cls:2"]
    with pytest.raises(InputError, match="task cls: duplicate id '1'"):
        plan_examples(_index(rows), SPEC, None)
    ret = {"task": ["ret"] * 2, "task_type": ["retrieval"] * 2, "example_id": ["ret:h", "ret:h"],
           "split": ["train"] * 2, "label": [None] * 2, "query": [None] * 2,
           "positive_ids": [["d1"], ["d1"]], "_status": ["ok"] * 2}
    plan = plan_examples(_index(ret), SPEC, None)
    assert plan.keep.tolist() == [True, False] and plan.stats["ret"].skipped == {"duplicate": 1}


def _corpus(doc_ids, source_ids=None, texts=None):
    texts = texts or [f"text of {d}" for d in doc_ids]
    return CorpusIndex.of(pa.table({"doc_id": doc_ids, "source_id": source_ids or [None] * len(doc_ids),
                                    "content_hash": [content_hash(x) for x in texts]}))


def test_positive_ids_that_name_source_ids_become_doc_ids_with_their_grades():
    rows = {"task": ["ret"] * 2, "task_type": ["retrieval"] * 2, "example_id": ["ret:1", "ret:2"],
            "split": ["train"] * 2, "label": [None] * 2, "query": [None] * 2,
            "positive_ids": [["u1", "u2"], ["u9"]], "positive_grades": [[2, 1], [1]], "_status": ["ok"] * 2}
    plan = plan_examples(_index(rows), SPEC, _corpus(["x1", "x2"], ["u1", "u2"]))
    assert plan.keep.tolist() == [True, False]
    assert (plan.positive_ids[0], plan.positive_grades[0]) == (["x1", "x2"], [2, 1])
    assert plan.stats["ret"].skipped == {"positive_not_in_corpus": 1}


PAIRS = parse_task_set({"name": "ex", "tasks": [{"name": "pairs", "type": "retrieval", "source": {"path": "p.jsonl"},
                                                "columns": {"query": "anchor", "positive": "pos"}}]})


def test_text_pairs_that_share_a_query_are_one_example_and_new_positives_join_the_corpus():
    rows = {"task": ["pairs"] * 3, "task_type": ["retrieval"] * 3, "example_id": ["pairs:a", "pairs:b", "pairs:a"],
            "split": ["train"] * 3, "label": [None] * 3, "query": [None] * 3, "positive_ids": [[], [], []],
            "positive": ["known text", "first new", "second new"], "_status": ["ok"] * 3}
    plan = plan_examples(_index(rows), PAIRS, _corpus(["k1"], texts=["known text"]))
    assert plan.keep.tolist() == [True, True, False]
    first, second = (plan.added_docs[content_hash(x)][0] for x in ("first new", "second new"))
    assert plan.positive_ids[0] == ["k1", second]  # the shared query keeps both positives, not a false negative
    assert plan.positive_ids[1] == [first]
    assert plan.stats["pairs"].skipped == {SAME_QUERY: 1} and plan.stats["pairs"].positives_added_to_corpus == 2
