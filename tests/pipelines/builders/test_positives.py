import pyarrow as pa
import pytest

from pipelines.builders.documents import content_hash
from pipelines.builders.positives import (DOC_IDS, SOURCE_IDS, CorpusIndex, id_kind, pair_doc_id, positive_doc,
                                          resolve_ids)
from storage import InputError

CORPUS = CorpusIndex.of(pa.table({
    "doc_id": ["x1-0000", "x1-0001", "x2-0000"], "source_id": ["d1", "d1", "d2"],
    "content_hash": [content_hash("a"), content_hash("b"), content_hash("c")]}))


def test_a_source_id_names_every_passage_of_its_document_and_keeps_its_grade():
    assert resolve_ids(["d1", "nope", "d2"], [2, 1, 1], SOURCE_IDS, CORPUS) == (
        ["x1-0000", "x1-0001", "x2-0000"], [2, 2, 1], 1)
    assert resolve_ids(["x2-0000", "d1"], None, DOC_IDS, CORPUS) == (["x2-0000"], None, 1)


def test_auto_takes_the_kind_the_ids_match_and_refuses_both():
    assert id_kind("t", "auto", [["d1"], ["zz"]], CORPUS) == SOURCE_IDS
    assert id_kind("t", "auto", [["x1-0000"]], CORPUS) == DOC_IDS
    assert id_kind("t", "doc_ids", [["d1"]], CORPUS) == DOC_IDS  # asked for: taken as is
    with pytest.raises(InputError, match="task t: its positive ids match both"):
        id_kind("t", "auto", [["d1"], ["x1-0000"]], CORPUS)


def test_a_positive_text_is_the_corpus_document_with_that_text_or_a_new_one():
    added = {}
    assert positive_doc("b", CORPUS, added) == "x1-0001" and added == {}
    new = positive_doc("a new text", CORPUS, added)
    assert new == pair_doc_id(content_hash("a new text")) and added == {content_hash("a new text"): (new, "a new text")}
    assert positive_doc("a new text", CORPUS, added) == new and len(added) == 1  # the same text, one document
