"""Which corpus documents a retrieval example's positives are.

A task names its positives by the corpus's ``doc_id``s, by the user's own ids (the corpus's
``source_id``: qrels, or a ``positive_ids`` column of them), or by their text (a text
pair). ``positives: auto`` in the spec takes whichever kind of id the task's ids match; a
task whose ids match both kinds is an error that asks which. A source id names every
passage of its document. A positive given as text is matched to the corpus by its content
hash; one the corpus lacks becomes a new document (``pair_doc_id``), added to the corpus
by ``quarry build tasks``. Pure; tested directly by ``tests/pipelines/builders/test_positives.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.builders.documents import content_hash, stable_doc_id
from storage import InputError

DOC_IDS, SOURCE_IDS, AUTO = "doc_ids", "source_ids", "auto"
PAIRS_SOURCE = "pairs"  # the provenance label of documents that came in as a pair's positive


@dataclass
class CorpusIndex:
    """The ids and text hashes of the corpus positives point into."""

    doc_ids: set[str] = field(default_factory=set)
    by_source: dict[str, list[str]] = field(default_factory=dict)  # source id -> its documents' doc ids
    by_hash: dict[str, str] = field(default_factory=dict)  # content hash -> the first doc id with that text

    @classmethod
    def of(cls, table: pa.Table) -> "CorpusIndex":
        """From a corpus's ``doc_id``, ``content_hash`` and (where it has one) ``source_id``."""
        out = cls()
        doc_ids = table.column("doc_id").to_pylist()
        out.doc_ids = set(doc_ids)
        sources = table.column("source_id").to_pylist() if "source_id" in table.column_names else [None] * len(doc_ids)
        for doc_id, source_id, h in zip(doc_ids, sources, table.column("content_hash").to_pylist()):
            if source_id is not None:
                out.by_source.setdefault(source_id, []).append(doc_id)
            out.by_hash.setdefault(h, doc_id)
        return out


def id_kind(task: str, requested: str, ids: list[list[str]], corpus: CorpusIndex) -> str:
    """What a task's positive ids name: ``requested``, or for auto the one kind they match."""
    if requested != AUTO:
        return requested
    flat = {x for row in ids for x in row}
    as_doc = any(x in corpus.doc_ids for x in flat)
    as_source = any(x in corpus.by_source for x in flat)
    if as_doc and as_source:
        raise InputError(f"task {task}: its positive ids match both the corpus's doc ids and its source ids: say "
                         "which with positives: doc_ids or positives: source_ids in the spec")
    return SOURCE_IDS if as_source else DOC_IDS


def resolve_ids(ids: list[str], grades: list[int] | None, kind: str,
                corpus: CorpusIndex) -> tuple[list[str], list[int] | None, int]:
    """(doc ids, their grades, how many of ``ids`` name no document)."""
    found: list[str] = []
    found_grades: list[int] = []
    missing = 0
    for i, x in enumerate(ids):
        docs = ([x] if x in corpus.doc_ids else []) if kind == DOC_IDS else corpus.by_source.get(x, [])
        missing += not docs
        for d in docs:
            if d not in found:
                found.append(d)
                found_grades.append(grades[i] if grades else 1)
    return found, (found_grades if grades else None), missing


def pair_doc_id(text_hash: str) -> str:
    """The doc id of a document that came in as a pair's positive: its text decides it."""
    return stable_doc_id(PAIRS_SOURCE, text_hash)


def positive_doc(text: str, corpus: CorpusIndex, added: dict[str, tuple[str, str]]) -> str:
    """The doc id of a positive given as text: the corpus's document with that text, else
    a new document, recorded in ``added`` (content hash -> (doc id, text))."""
    h = content_hash(text)
    if h in corpus.by_hash:
        return corpus.by_hash[h]
    if h not in added:
        added[h] = (pair_doc_id(h), text)
    return added[h][0]
