import re

import pytest

from pipelines.builders.qrels import load_qrels, split_of
from storage import InputError


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_judgements_by_query_with_grades_splits_and_the_header_skipped(tmp_path):
    (tmp_path / "qrels").mkdir()
    train = _write(tmp_path / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td3\t0\n")
    dev = _write(tmp_path / "qrels" / "validation.tsv", "q3\td4\t1\n")
    qrels = load_qrels([train, dev])
    assert qrels.positives("q1").positives == [("d1", 1), ("d2", 2)] and qrels.positives("q1").split == "train"
    assert qrels.positives("q2").positives == [] and qrels.not_relevant == 1  # judged, but not relevant
    assert qrels.positives("q3").split == "dev"  # BEIR's "validation" is Quarry's dev
    assert qrels.positives("nope") is None
    assert split_of("qrels/judgements.tsv") is None  # not a split's name: the spec's seeded split decides


@pytest.mark.parametrize("text, message", [
    ("q1\td1\n", "qrels.tsv:1: expected 3 tab-separated fields (query-id, corpus-id, score), got 2"),
    ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "qrels.tsv:2: score 'high' is not a number"),
    ("\n\n", "qrels.tsv: the file is empty"),
    ("q1\t\t1\n", "qrels.tsv:1: an empty query or corpus id"),
])
def test_a_bad_line_is_one_error_naming_file_and_line(tmp_path, text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_qrels([_write(tmp_path / "qrels.tsv", text)])


def test_a_query_judged_in_two_splits_is_refused(tmp_path):
    a = _write(tmp_path / "train.tsv", "q1\td1\t1\n")
    b = _write(tmp_path / "test.tsv", "q1\td2\t1\n")
    with pytest.raises(InputError, match="test.tsv:1: query 'q1' is judged in .*train.tsv too"):
        load_qrels([a, b])
