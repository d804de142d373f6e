"""``quarry build beir DIR --name NAME``: a BEIR (or MTEB retrieval) folder as a corpus and a
retrieval task, in one command.

    DIR/corpus.jsonl        {"_id", "title", "text"}: corpus/NAME, each document's _id its source_id
    DIR/queries.jsonl       {"_id", "text"}: the task's queries
    DIR/qrels/<split>.tsv   query-id, corpus-id, score: the positives and BEIR's own splits

The corpus keeps each document's title in its text (``title text``), as mteb encodes a
BEIR document, so that mining, training and ``quarry eval`` read what mteb would. The task
is ``NAME`` in ``examples/NAME``; a spec can name the same folder as a task source
(``source: {beir: DIR}``). Tested by ``tests/pipelines/test_beir_round_trip.py``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import pyarrow as pa

from pipelines.builders.corpus import WikiBuildConfig, build_wiki
from pipelines.builders.qrels import load_qrels
from pipelines.builders.result import BuildResult
from pipelines.builders.sources import SourceConfig, check_not_empty, parse_jsonl_batch
from pipelines.builders.task_spec import BEIR_COLUMNS, TaskSetSpec, TaskSource, TaskSpec
from storage import Catalog, InputError, validate_name
from storage.schemas import RETRIEVAL

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
DEFAULT_INSTRUCTION = "Given a query, retrieve the documents relevant to it"


@dataclass(frozen=True)
class BeirFiles:
    corpus: str
    queries: str
    qrels: tuple[str, ...]  # one file per split


def beir_files(folder: str) -> BeirFiles:
    """The folder's files, each checked: a missing one is a one-line error naming it."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no such BEIR folder")
    corpus, queries = os.path.join(folder, CORPUS_FILE), os.path.join(folder, QUERIES_FILE)
    for path in (corpus, queries):
        if not os.path.isfile(path):
            raise InputError(f"{folder}: not a BEIR folder: it has no {os.path.basename(path)}")
    qrels = tuple(sorted(glob.glob(os.path.join(folder, QRELS_DIR, "*.tsv"))))
    if not qrels:
        raise InputError(f"{folder}: not a BEIR folder: it has no {QRELS_DIR}/<split>.tsv")
    return BeirFiles(corpus, queries, qrels)


def check_queries_and_qrels(files: BeirFiles) -> None:
    """Parse the queries and qrels once before the corpus is committed: a bad line in either
    is then a one-line error that leaves nothing behind, rather than a corpus without its task."""
    check_not_empty([files.queries])
    with open(files.queries, "rb") as f:
        parse_jsonl_batch(pa.table({"path": [files.queries], "bytes": [f.read()]}), dict(BEIR_COLUMNS),
                          {BEIR_COLUMNS["query"]})
    load_qrels(list(files.qrels))


@dataclass(frozen=True)
class BeirBuildConfig:
    folder: str  # the BEIR folder
    name: str  # corpus/NAME and examples/NAME; the task is NAME too
    instruction: str = DEFAULT_INSTRUCTION  # the task's instruction, as a spec's

    def __post_init__(self) -> None:
        validate_name(self.name)


def beir_spec(cfg: BeirBuildConfig) -> TaskSetSpec:
    """The task spec a BEIR folder stands for: one retrieval task judged by its qrels."""
    return TaskSetSpec(name=cfg.name, corpus=cfg.name, tasks=(
        TaskSpec(name=cfg.name, type=RETRIEVAL, source=TaskSource(beir=os.path.abspath(cfg.folder)),
                 columns=dict(BEIR_COLUMNS), instruction=cfg.instruction, positives="source_ids"),))


def build_beir(cfg: BeirBuildConfig, catalog: Catalog) -> list[BuildResult]:
    """``corpus/NAME`` from ``corpus.jsonl`` (``_id`` its source id, the title in the text),
    then ``examples/NAME`` from the queries and qrels."""
    from pipelines.builders.tasks import (
        build_tasks,  # it reads BEIR folders through beir_files
    )

    files = beir_files(cfg.folder)  # a folder that is not BEIR's stops here, before Ray
    check_queries_and_qrels(files)
    corpus = build_wiki(WikiBuildConfig(
        name=cfg.name, title_in_text=True,
        source=SourceConfig(kind="files", paths=[files.corpus], columns={"id": "_id"}, label=f"beir:{cfg.name}")),
        catalog)
    return [corpus, build_tasks(beir_spec(cfg), catalog)]
