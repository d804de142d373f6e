"""Mining, stage 1's candidate pools: the corpus the retrieval tasks search (the version their
examples were built from), and each class task's own examples, so that a class task's
negative is always another example, of another class. Tested through
tests/pipelines/mine/test_mine_ray.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.inputs import examples_corpus
from pipelines.mine.config import CORPUS_POOL, TaskPlan
from storage import Catalog, InputError, InputRef, Manifest


@dataclass
class Pool:
    """Candidates of one search: corpus documents, or a class task's own examples."""

    name: str
    table: pa.Table  # id, text, hash, label, source_id
    vectors: np.ndarray | None = None

    @functools.cached_property
    def position(self) -> dict[str, int]:
        return {x: i for i, x in enumerate(self.table.column("id").to_pylist())}


def pools_for(plans: dict[str, TaskPlan], task_rows: dict[str, pa.Table], catalog: Catalog, examples: Manifest,
           inputs: list[InputRef]) -> dict[str, Pool]:
    """The candidate pools the tasks search: the corpus (once), and each class task's own examples."""
    pools: dict[str, Pool] = {}
    for plan in plans.values():
        if plan.pool in pools:
            continue
        if plan.pool == CORPUS_POOL:
            corpus_m = examples_corpus(catalog, examples)
            pools[CORPUS_POOL] = corpus_pool(catalog, corpus_m)
            inputs.append(corpus_m.input_ref())
        else:
            rows = task_rows[plan.task]
            pools[plan.pool] = Pool(plan.pool, pa.table({"id": rows.column("example_id"), "text": rows.column("query"),
                                                         "hash": rows.column("query_hash"),
                                                         "label": rows.column("label"),
                                                         "source_id": rows.column("source_id")}))
    return pools


def read_with_nulls(catalog: Catalog, manifest: Manifest, columns: list[str]) -> pa.Table:
    """``columns`` of a version; one it was written without (a source id, in a version from
    before they were kept) reads as nulls."""
    have = set(manifest.arrow().names)
    table = catalog.read_table(manifest.kind, manifest.name, manifest.version,
                               columns=[c for c in columns if c in have])
    for c in columns:
        if c not in have:
            table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
    return table.select(columns)


def corpus_pool(catalog: Catalog, corpus_m) -> Pool:
    corpus = read_with_nulls(catalog, corpus_m, ["doc_id", "text", "content_hash", "source_id"])
    if corpus.num_rows == 0:
        raise InputError(f"corpus/{corpus_m.name} {corpus_m.version} is empty: nothing to mine from")
    return Pool(CORPUS_POOL, pa.table({"id": corpus.column("doc_id"), "text": corpus.column("text"),
                                       "hash": corpus.column("content_hash"),
                                       "label": pa.nulls(corpus.num_rows, pa.string()),
                                       "source_id": corpus.column("source_id")}))
