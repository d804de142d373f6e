"""``quarry build wiki``: the Wikipedia corpus as a Ray Data pipeline.

read (embedded | Hugging Face | files) -> clean, id, hash, split passages (map_batches)
-> plan de-duplication in the driver from three small columns -> apply the plan per block
-> write Parquet shards through ``storage`` and commit a ``corpus`` version.

De-duplication keeps, for each content hash, the row with the smallest doc_id, so the
result does not depend on row order or on how the input was split into blocks. The plan
is made from (doc_id, content_hash, status) alone, about 60 bytes a row in the driver: a
Ray shuffle would cost 10-16 s even on 10k rows on a small machine (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import pyarrow as pa

from pipelines.builders.documents import (EMPTY_TEXT, MISSING_TITLE, OK, NormalizeOptions, normalize_documents,
                                          token_counter)
from pipelines.builders.result import BuildResult
from pipelines.builders.sources import SourceConfig, open_source, with_id_column
from pipelines.runtime.local_ray import ensure_ray
from pipelines.runtime.ordered_writes import write_blocks_ordered
from storage import Catalog, ConfigError, InputError, validate_name
from storage.changes import CORPUS_CHANGES, staged_changes
from storage.names import DEFAULT_DATASET

log = logging.getLogger("quarry")

INDEX_COLUMNS = ["doc_id", "source_id", "title", "content_hash", "_status"]
BUILT_BY = "quarry build wiki"  # the manifest's config says which builder made it (quarry refresh reads it)


@dataclass
class WikiBuildConfig:
    name: str = DEFAULT_DATASET
    source: SourceConfig = field(default_factory=SourceConfig)
    passage_chars: int | None = None
    passage_tokens: int | None = None
    tokenizer: str | None = None
    title_in_text: bool = False  # each text begins with its title (as mteb reads a BEIR corpus)
    batch_size: int = 512

    def __post_init__(self) -> None:
        validate_name(self.name)
        if self.passage_chars is not None and self.passage_chars < 16:
            raise ConfigError("passage_chars", f"must be at least 16, got {self.passage_chars}")
        if self.passage_tokens is not None:
            if self.passage_tokens < 8:
                raise ConfigError("passage_tokens", f"must be at least 8, got {self.passage_tokens}")
            if not self.tokenizer:
                raise ConfigError("passage_tokens", "needs a tokenizer (a local tokenizer path)")
        if self.passage_chars and self.passage_tokens:
            raise ConfigError("passage_tokens", "cannot be given with passage_chars: give one or the other")

    @classmethod
    def from_manifest(cls, config: dict) -> "WikiBuildConfig":
        """The config a corpus version was built with, as its manifest records it."""
        known = {f.name for f in fields(cls)} - {"source"}
        source_fields = {f.name for f in fields(SourceConfig)}
        source = SourceConfig(**{k: v for k, v in config.get("source", {}).items() if k in source_fields})
        return cls(source=source, **{k: v for k, v in config.items() if k in known})


@dataclass
class DedupStats:
    """What became of a build's source rows (recorded in the corpus manifest)."""

    rows_in: int
    empty_text: int
    missing_title: int
    duplicate_content: int  # same text as a kept row
    rows_out: int


@dataclass
class DedupPlan:
    keep: np.ndarray  # bool per row, in input order
    stats: DedupStats


def plan_dedup(index: pa.Table) -> DedupPlan:
    """Which rows survive: status ok, unique ids, and one row per content hash (the smallest
    doc_id) among rows without a source id. A row with a source id is a document of the
    user's own collection that their qrels may name: it stays even when its text repeats
    another's (mining still rejects a copy of a positive as ``duplicate_of_positive``)."""
    cols = {c: index.column(c).to_pylist() for c in index.column_names}
    doc_ids, statuses = cols["doc_id"], cols["_status"]
    _check_source_ids(cols)
    keeper: dict[str, int] = {}
    keep = np.zeros(len(doc_ids), dtype=bool)
    for pos, (doc_id, h, status, source_id) in enumerate(zip(doc_ids, cols["content_hash"], statuses,
                                                             cols["source_id"])):
        if status != OK:
            continue
        if source_id is not None:
            keep[pos] = True
            continue
        best = keeper.get(h)
        if best is None or doc_id < doc_ids[best]:
            keeper[h] = pos
    keep[list(keeper.values())] = True
    seen: dict[str, int] = {}
    for pos in np.flatnonzero(keep):
        other = seen.setdefault(doc_ids[pos], pos)
        if other != pos:
            raise InputError(
                f"duplicate document id {doc_ids[pos]} (titles {cols['title'][other]!r} and {cols['title'][pos]!r} "
                "have different texts): map a unique id column with --columns id=<column>")
    stats = DedupStats(rows_in=len(doc_ids), empty_text=statuses.count(EMPTY_TEXT),
                       missing_title=statuses.count(MISSING_TITLE),
                       duplicate_content=statuses.count(OK) - int(keep.sum()), rows_out=int(keep.sum()))
    return DedupPlan(keep=keep, stats=stats)


def _check_source_ids(cols: dict) -> None:
    """Every source id names one input row (all the passages of one row share it)."""
    firsts = cols.get("passage_index") or [0] * len(cols["doc_id"])
    seen: dict[str, int] = {}
    for pos, (source_id, first, status) in enumerate(zip(cols["source_id"], firsts, cols["_status"])):
        if source_id is None or first != 0 or status != OK:
            continue
        other = seen.setdefault(source_id, pos)
        if other != pos:
            raise InputError(f"duplicate source id {source_id!r}: two rows have it (titled {cols['title'][other]!r} "
                             f"and {cols['title'][pos]!r}); each document needs an id of its own")


def _select_index(block: pa.Table) -> pa.Table:
    return block.select(INDEX_COLUMNS + (["passage_index"] if "passage_index" in block.column_names else []))


def _apply_keep(block: pa.Table, keep: np.ndarray) -> pa.Table:
    return block.filter(pa.array(keep)).drop_columns(["_status"])


def build_wiki(cfg: WikiBuildConfig, catalog: Catalog) -> BuildResult:
    import ray

    if cfg.passage_tokens:
        token_counter(cfg.tokenizer)  # a tokenizer that does not load stops here, before any read
    src, id_column = with_id_column(cfg.source)
    if id_column:
        log.info("build wiki: the source's %r column is each document's id (source_id; doc ids derive from it); "
                 "--columns id=<column> picks another", id_column)
        cfg = replace(cfg, source=src)
    ensure_ray()
    opts = NormalizeOptions(
        source=src.source_label(), default_lang=src.lang, metadata_columns=src.metadata_columns(),
        passage_chars=cfg.passage_chars, passage_tokens=cfg.passage_tokens, tokenizer=cfg.tokenizer,
        title_in_text=cfg.title_in_text)
    log.info("build wiki: reading %s source%s", src.kind, f" (limit {src.limit})" if src.limit else "")
    normalized = open_source(src).map_batches(
        normalize_documents, fn_kwargs={"opts": opts}, batch_format="pyarrow", batch_size=cfg.batch_size)
    blocks = normalized.to_arrow_refs()  # runs the read+clean stages; blocks stay in the object store
    index_parts = ray.get([ray.remote(_select_index).remote(b) for b in blocks])
    sizes = [t.num_rows for t in index_parts]
    plan = plan_dedup(pa.concat_tables(index_parts) if index_parts else pa.table({c: [] for c in INDEX_COLUMNS}))
    log.info("build wiki: %(rows_in)d rows read, %(empty_text)d empty, %(missing_title)d without title, "
             "%(duplicate_content)d duplicate texts, %(rows_out)d kept", asdict(plan.stats))
    if plan.stats.rows_out == 0:
        raise InputError(f"no usable documents in the {src.kind} source "
                         f"({plan.stats.rows_in} rows read, {plan.stats.empty_text} with empty text)")
    apply = ray.remote(_apply_keep)
    offsets = np.cumsum([0] + sizes)
    kept = [apply.remote(b, plan.keep[offsets[i]:offsets[i + 1]]) for i, b in enumerate(blocks)]
    kept_sizes = [int(plan.keep[offsets[i]:offsets[i + 1]].sum()) for i in range(len(blocks))]
    with catalog.writer("corpus", cfg.name) as writer:
        write_blocks_ordered(kept, kept_sizes, writer.staging_dir, writer.filesystem, rows_per_file=50_000)
        changes = staged_changes(writer, CORPUS_CHANGES)
        manifest = writer.commit(config={"built_by": BUILT_BY, **asdict(cfg)},
                                 stats={**asdict(plan.stats), "changes": changes.to_dict()}, skip_if_unchanged=True)
        return BuildResult(manifest=manifest, unchanged=writer.unchanged, changes=changes)
