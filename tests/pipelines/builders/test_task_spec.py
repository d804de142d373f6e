import os

import pytest

from pipelines.builders.task_spec import load_task_set, parse_task_set, render
from storage import InputError

VITAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "tasks", "vital.yaml")


def _spec(**overrides):
    task = {"name": "t", "type": "retrieval", "source": {"corpus": "c"},
            "columns": {"query": "title", "positive_ids": "doc_id"}, "instruction": "Find it"}
    task.update(overrides.pop("task", {}))
    raw = {"name": "ex", "corpus": "c", "tasks": [task]}
    raw.update(overrides)
    return raw


def test_shipped_vital_spec_parses():
    spec = load_task_set(VITAL)
    assert [t.type for t in spec.tasks] == ["retrieval", "retrieval", "classification", "clustering"]
    assert spec.format_instruction("Find it") == "Instruct: Find it\nQuery: "
    assert all(t.exclude_labels == ("Uncategorized",) for t in spec.tasks[2:])


@pytest.mark.parametrize("overrides, message", [
    ({"task": {"type": "ranking"}}, r"spec: tasks\[0\].type: unknown task type 'ranking'"),
    ({"task": {"columns": {"query": "title"}}},
     r"tasks\[0\].columns: a retrieval task names its positives one way: positive_ids, positive \(text pairs\) "
     r"or a source with qrels; got none"),
    ({"task": {"columns": {"query": "title", "positive_ids": "doc_id", "positive": "text"}}},
     r"tasks\[0\].columns: a retrieval task names its positives one way: .*got positive_ids, positive"),
    ({"task": {"source": {"path": "q.jsonl", "qrels": "qrels.tsv"}, "columns": {"query": "text"}}},
     r"tasks\[0\].columns: a task judged by qrels needs 'id'"),
    ({"task": {"source": {"corpus": "vital", "qrels": "qrels.tsv"}}},
     r"tasks\[0\].source.qrels: qrels judge the queries of a path source"),
    ({"task": {"positives": "titles"}}, r"tasks\[0\].positives: must be one of auto, doc_ids, source_ids"),
    ({"task": {"columns": {"query": "t", "positive_ids": "d", "label": "x"}}}, r"tasks\[0\].columns.label: not a field"),
    ({"task": {"source": {"corpus": "c", "path": "f.jsonl"}}}, r"tasks\[0\].source: give exactly one"),
    ({"task": {"name": "../x"}}, r"tasks\[0\].name: invalid dataset name"),
    ({"task": {"exclude_labels": ["a"]}}, r"tasks\[0\].exclude_labels: a retrieval task has no labels"),
    ({"splits": {"train": 0.5, "test": 0.2}}, r"splits: fractions must sum to 1"),
    ({"name": "a/b"}, r"name: invalid dataset name"),
    ({"bogus": 1}, r"bogus: unknown field"),
    ({"instruction_template": "no placeholder"}, r"instruction_template: must be a string containing"),
])
def test_spec_errors_name_the_field(overrides, message):
    with pytest.raises(InputError, match=message):
        parse_task_set(_spec(**overrides))


def test_missing_or_broken_spec_file(tmp_path):
    with pytest.raises(InputError, match="no such task spec"):
        load_task_set(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_task_set(str(bad))


def test_render_columns_and_templates():
    row = {"title": "Paris", "description": "Capital of France", "empty": ""}
    assert render("title", row) == "Paris"
    assert render("{title}: {description}", row) == "Paris: Capital of France"
    assert render("{title}: {empty}", row) is None
