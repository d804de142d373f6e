"""Relevance judgements by the user's own ids: BEIR's ``qrels/<split>.tsv`` files.

Each line is ``query-id<TAB>corpus-id<TAB>score`` (BEIR writes a header line first); a
score above 0 makes the document a positive of the query, and the score is kept as its
grade. A file named after a split (``train``, ``dev``, ``test``; ``validation`` is read as
``dev``) puts its queries in that split, so BEIR's own splits are kept instead of drawn.
Bad lines are one-line errors naming the file and line. Pure; tested directly by
``tests/pipelines/builders/test_qrels.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from storage import InputError

SPLIT_NAMES = {"train": "train", "dev": "dev", "test": "test", "validation": "dev"}


@dataclass
class QueryJudgements:
    split: str | None  # from the file's name; None: the spec's seeded split decides
    positives: list[tuple[str, int]] = field(default_factory=list)  # (corpus id, grade > 0), in file order


@dataclass
class Qrels:
    by_query: dict[str, QueryJudgements] = field(default_factory=dict)
    not_relevant: int = 0  # lines with a score of 0 or less: judged, not positives

    def positives(self, query_id: str) -> QueryJudgements | None:
        return self.by_query.get(query_id)


def split_of(path: str) -> str | None:
    return SPLIT_NAMES.get(os.path.splitext(os.path.basename(path))[0].lower())


def load_qrels(paths: list[str]) -> Qrels:
    """Every judgement of ``paths``; a query judged in two files of different splits is an error."""
    qrels = Qrels()
    where: dict[str, str] = {}
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such qrels file")
        split = split_of(path)
        lines = _read_lines(path)
        if not lines:
            raise InputError(f"{path}: the file is empty")
        for lineno, query_id, corpus_id, grade in lines:
            judged = qrels.by_query.get(query_id)
            if judged is None:
                judged = qrels.by_query[query_id] = QueryJudgements(split)
                where[query_id] = path
            elif judged.split != split:
                raise InputError(f"{path}:{lineno}: query {query_id!r} is judged in {where[query_id]} too, a "
                                 "file of another split: a query belongs to one split")
            if grade > 0:
                judged.positives.append((corpus_id, grade))
            else:
                qrels.not_relevant += 1
    return qrels


def _read_lines(path: str) -> list[tuple[int, str, str, int]]:
    out = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise InputError(f"{path}:{lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                                 f"got {len(fields)}")
            query_id, corpus_id, score = (x.strip() for x in fields)
            try:
                value = float(score)
            except ValueError:
                if lineno == 1:  # BEIR's header: query-id, corpus-id, score
                    continue
                raise InputError(f"{path}:{lineno}: score {score!r} is not a number") from None
            if not query_id or not corpus_id:
                raise InputError(f"{path}:{lineno}: an empty query or corpus id")
            out.append((lineno, query_id, corpus_id, max(1, round(value)) if value > 0 else 0))
    return out
