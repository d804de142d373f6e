from dataclasses import asdict

import pyarrow as pa
import pytest

from pipelines.builders.corpus import plan_dedup
from pipelines.builders.documents import (NormalizeOptions, clean_text, content_hash, normalize_documents,
                                          split_passages, stable_doc_id)
from storage import InputError


def test_clean_text_collapses_whitespace_and_controls():
    assert clean_text("  a \t b\x00c \n\n\n  d  \r\n e ") == "a bc\n\nd\ne"
    assert clean_text(None) == "" and clean_text("   ") == ""
    assert clean_text("e\u0301") == "\u00e9"  # NFC


def test_ids_are_stable_and_source_scoped():
    assert stable_doc_id("s", "Paris") == stable_doc_id("s", "Paris")
    assert stable_doc_id("s", "Paris") != stable_doc_id("t", "Paris")
    assert len(content_hash("x")) == 32


def test_split_passages_by_characters_keeps_sentences_whole():
    text = "One two three. Four five six. Seven eight nine."
    assert split_passages(text) == [text]
    parts = split_passages(text, max_chars=30)
    assert parts == ["One two three. Four five six.", "Seven eight nine."]
    assert all(len(p) <= 30 for p in split_passages("x" * 100 + " y", max_chars=16))
    assert "".join(split_passages("x" * 100, max_chars=16)) == "x" * 100


def test_split_passages_by_tokens():
    words = lambda s: len(s.split())  # a stand-in tokenizer: one token per word
    text = "a b c. d e f. g h i j k l m n."
    parts = split_passages(text, max_tokens=4, count_tokens=words)
    assert all(words(p) <= 4 for p in parts)
    assert " ".join(parts).split() == text.split()
    with pytest.raises(ValueError):
        split_passages(text, max_tokens=4)


def _raw(**cols):
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


def test_normalize_marks_unusable_rows_instead_of_dropping_them():
    batch = _raw(title=["A", "B", "", "D"], text=["alpha  text", "", "gamma", "delta"], topic=["t", "t", "t", None])
    out = normalize_documents(batch, NormalizeOptions(source="s", default_lang="en", metadata_columns=("topic",)))
    assert out.column("_status").to_pylist() == ["ok", "empty_text", "missing_title", "ok"]
    assert out.column("text").to_pylist()[0] == "alpha text"
    assert out.column("lang").to_pylist() == ["en"] * 4
    assert out.column("topic").to_pylist() == ["t", "t", "t", None]


def test_normalize_into_passages_gives_parent_ids():
    batch = _raw(title=["A"], text=["First sentence here. Second sentence here."])
    out = normalize_documents(batch, NormalizeOptions(source="s", default_lang="en", passage_chars=25))
    assert out.num_rows == 2
    assert len(set(out.column("parent_id").to_pylist())) == 1
    assert out.column("passage_index").to_pylist() == [0, 1]
    assert out.column("doc_id").to_pylist()[0].endswith("-0000")


def _index(rows):
    columns = ["doc_id", "title", "content_hash", "_status", "source_id"]
    rows = [r if len(r) == 5 else (*r, None) for r in rows]
    return pa.table({k: pa.array([r[i] for r in rows], pa.string()) for i, k in enumerate(columns)})


def test_dedup_keeps_smallest_doc_id_per_text_whatever_the_order():
    rows = [("b", "B", "h1", "ok"), ("a", "A", "h1", "ok"), ("c", "C", "h2", "ok"), ("d", "D", "h3", "empty_text")]
    plan = plan_dedup(_index(rows))
    assert plan.keep.tolist() == [False, True, True, False]
    assert asdict(plan.stats) == {"rows_in": 4, "empty_text": 1, "missing_title": 0, "duplicate_content": 1,
                                  "rows_out": 2}
    reversed_plan = plan_dedup(_index(rows[::-1]))
    assert reversed_plan.keep.tolist() == plan.keep.tolist()[::-1]


def test_duplicate_ids_with_different_text_are_an_error():
    with pytest.raises(InputError, match="duplicate document id a .*'A1' and 'A2'"):
        plan_dedup(_index([("a", "A1", "h1", "ok"), ("a", "A2", "h2", "ok")]))
    # The same id with the same text is a plain duplicate, kept once.
    assert plan_dedup(_index([("a", "A", "h1", "ok"), ("a", "A", "h1", "ok")])).keep.sum() == 1


def test_a_rows_own_id_is_its_source_id_in_every_passage():
    batch = _raw(title=["A", "B"], text=["First sentence here. Second sentence here.", "short"], id=["u1", None])
    out = normalize_documents(batch, NormalizeOptions(source="s", default_lang="en", passage_chars=25))
    assert out.column("source_id").to_pylist() == ["u1", "u1", None]
    assert out.column("doc_id").to_pylist()[0] == stable_doc_id("s", "u1") + "-0000"  # the id, not the title


def test_rows_with_their_own_ids_are_kept_whatever_their_text_and_an_id_twice_is_refused():
    rows = [("a", "A", "h1", "ok", "u1"), ("b", "B", "h1", "ok", "u2"), ("c", "C", "h1", "ok", None)]
    assert plan_dedup(_index(rows)).keep.tolist() == [True, True, True]  # qrels may name either copy
    twice = [("a", "A", "h1", "ok", "u1"), ("b", "B", "h2", "ok", "u1")]
    with pytest.raises(InputError, match="duplicate source id 'u1': two rows have it \\(titled 'A' and 'B'\\)"):
        plan_dedup(_index(twice))


def test_a_title_goes_into_the_text_where_asked_as_mteb_reads_a_beir_document():
    out = normalize_documents(_raw(title=["Paris"], text=["The capital."]),
                              NormalizeOptions(source="s", default_lang="en", title_in_text=True))
    assert out.column("text").to_pylist() == ["Paris The capital."]
