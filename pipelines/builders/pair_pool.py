"""Text pairs' positives as corpus documents: what ``quarry build tasks`` adds to the corpus
when a task brings (query, positive text) pairs.

Positives the corpus already holds (the same text, by content hash) are taken as they are;
the others are appended to the corpus as a new version, which the examples then name as
their input. Without a corpus, the positives alone make one (``corpus/<examples name>``),
de-duplicated by text. A pair's document carries no source id and no title; its doc id
comes from its text (``pipelines.builders.positives.pair_doc_id``). Tested by
``tests/pipelines/builders/test_user_data_ray.py``.
"""

from __future__ import annotations

import pyarrow as pa

from pipelines.builders.documents import content_hash
from pipelines.builders.positives import PAIRS_SOURCE
from storage import Catalog, Manifest
from storage.schemas import corpus_schema

BUILT_BY = "quarry build tasks"


def pair_documents(added: dict[str, tuple[str, str]], schema: pa.Schema) -> pa.Table:
    """The added positives as corpus rows of ``schema`` (columns they have no value for: null)."""
    rows = sorted(added.values())
    values = {"doc_id": [d for d, _ in rows], "text": [t for _, t in rows], "title": [""] * len(rows),
              "source": [PAIRS_SOURCE] * len(rows), "content_hash": [content_hash(t) for _, t in rows]}
    return pa.table({f.name: pa.array(values[f.name], f.type) if f.name in values else pa.nulls(len(rows), f.type)
                     for f in schema}, schema=schema)


def add_to_corpus(catalog: Catalog, name: str, added: dict[str, tuple[str, str]], examples: str) -> Manifest:
    """A new version of ``corpus/name`` holding its documents and the added positives (the
    corpus is created when it does not exist). Its config keeps the builder's own, so a
    ``quarry refresh`` still rebuilds the corpus from its source, and the examples refresh
    adds the positives again."""
    latest = catalog.latest("corpus", name)
    if latest is None:
        table = pair_documents(added, corpus_schema())
        config = {"built_by": BUILT_BY, "positives_of": examples}
        inputs = []
    else:
        previous = catalog.manifest("corpus", name, latest)
        table = catalog.read_table("corpus", name, latest)
        table = pa.concat_tables([table, pair_documents(added, table.schema)])
        config = {**previous.config, "positives_added_by": examples}
        inputs = [previous.input_ref()]
    return catalog.write_table("corpus", name, table, config=config, inputs=inputs,
                               stats={"rows_out": table.num_rows, "positives_added": len(added)})
