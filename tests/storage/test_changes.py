"""storage.changes: added, removed, modified and unchanged rows between two versions."""

import pyarrow as pa

from storage.changes import CORPUS_CHANGES, EXAMPLE_CHANGES, ChangeSummary, summarize_changes


def _corpus(rows):
    return pa.table({"doc_id": [r[0] for r in rows], "title": [r[1] for r in rows],
                     "content_hash": [r[2] for r in rows]})


def test_rows_are_matched_by_id_and_compared_on_title_and_text():
    before = _corpus([("a", "A", "h1"), ("b", "B", "h2"), ("c", "C", "h3"), ("d", "D", "h4")])
    after = _corpus([("a", "A", "h1"), ("b", "B2", "h2"), ("c", "C", "h9"), ("e", "E", "h5")])
    s = summarize_changes(before, after, CORPUS_CHANGES, "v0001")
    assert (s.total.added, s.total.removed, s.total.modified, s.total.unchanged) == (1, 1, 2, 1)
    assert s.describe() == "vs v0001: 1 added, 1 removed, 2 modified, 1 unchanged" and s.changed
    assert ChangeSummary.from_dict(s.to_dict()) == s


def test_examples_count_per_task_and_a_removed_row_keeps_its_old_task():
    def table(rows):
        return pa.table({"example_id": [r[0] for r in rows], "task": [r[1] for r in rows],
                         "query_hash": [r[2] for r in rows], "positive_ids": [r[3] for r in rows],
                         "positive_grades": pa.nulls(len(rows), pa.list_(pa.int64())),
                         "positive": [None] * len(rows), "label": [None] * len(rows),
                         "score": pa.nulls(len(rows), pa.float64())})

    before = table([("t:1", "t", "q1", ["d1"]), ("t:2", "t", "q2", ["d2"]), ("u:1", "u", "q3", ["d3"])])
    after = table([("t:1", "t", "q1", ["d1", "d9"]), ("t:2", "t", "q2", ["d2"]), ("t:3", "t", "q4", ["d4"])])
    s = summarize_changes(before, after, EXAMPLE_CHANGES, "v0003")
    assert s.to_dict()["groups"] == {"t": {"added": 1, "removed": 0, "modified": 1, "unchanged": 1},
                                     "u": {"added": 0, "removed": 1, "modified": 0, "unchanged": 0}}


def test_no_change_and_a_first_version():
    rows = _corpus([("a", "A", "h1")])
    assert not summarize_changes(rows, rows, CORPUS_CHANGES, "v0001").changed
    first = summarize_changes(None, rows, CORPUS_CHANGES, None)
    assert first.previous_version is None and first.total.added == 1 and first.describe() == "first version, 1 added"
