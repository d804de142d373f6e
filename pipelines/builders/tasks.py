"""``quarry build tasks``: instruction-task datasets as one ``examples`` table.

Per task: read the source (a corpus in the catalog, files, or a Hugging Face dataset) ->
``build_task_rows`` (map_batches: render the mapping, stable example id, split by hash;
``pipelines.builders.task_rows``) -> one driver-side plan over small columns (duplicate ids,
positives missing from the corpus, NV-Embed-v2 class pairing; ``pipelines.builders.task_plan``)
-> apply the plan per block -> write and commit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from pipelines.builders.result import BuildResult
from pipelines.builders.sources import SourceConfig, open_mapped
from pipelines.builders.task_plan import INDEX_COLUMNS, ExamplePlan, plan_examples
from pipelines.builders.task_rows import STATUS, WITH_STATUS, build_task_rows
from pipelines.builders.task_spec import TaskSetSpec, TaskSpec, template_fields
from pipelines.runtime.local_ray import ensure_ray
from pipelines.runtime.ordered_writes import write_blocks_ordered
from storage import Catalog, InputError, InputRef
from storage.changes import EXAMPLE_CHANGES, staged_changes
from storage.schemas import CLASS_TYPES, EXAMPLES_SCHEMA, RETRIEVAL

log = logging.getLogger("quarry")

BUILT_BY = "quarry build tasks"  # the manifest's config says which builder made it (quarry refresh reads it)


def _select_index(block: pa.Table) -> pa.Table:
    # Query text is needed only to fill class-task positives; keep it out of the driver otherwise.
    is_class = np.isin(np.array(block.column("task_type").to_pylist(), dtype=object), CLASS_TYPES)
    query = pa.array([q if c else None for q, c in zip(block.column("query").to_pylist(), is_class)], pa.string())
    return block.select(INDEX_COLUMNS).set_column(INDEX_COLUMNS.index("query"), "query", query)


def _apply_plan(block: pa.Table, keep: np.ndarray, positive_ids: list, positive: list) -> pa.Table:
    ids = [new if new is not None else old for old, new in zip(block.column("positive_ids").to_pylist(), positive_ids)]
    pos = [new if new is not None else old for old, new in zip(block.column("positive").to_pylist(), positive)]
    block = block.set_column(block.column_names.index("positive_ids"), "positive_ids",
                             pa.array(ids, pa.list_(pa.string())))
    block = block.set_column(block.column_names.index("positive"), "positive", pa.array(pos, pa.string()))
    return block.filter(pa.array(keep)).drop_columns([STATUS])


def _open_task_source(task: TaskSpec, catalog: Catalog, limit: int | None, base_dir: str):
    import ray.data

    needed = task.source_columns()
    src = task.source
    if src.corpus:
        manifest = catalog.manifest("corpus", src.corpus, src.version)
        have = [f["name"] for f in manifest.schema]
        for col in needed:
            if col not in have:
                raise InputError(f"task {task.name}: corpus/{src.corpus} has no column {col!r} "
                                 f"(columns: {', '.join(have)})")
        ds = ray.data.read_parquet(catalog.files("corpus", src.corpus, manifest.version),
                                   filesystem=catalog.root.fs, columns=needed)
        if limit:
            ds = ds.limit(limit)
        return ds, manifest.input_ref()
    if src.path:
        paths = [p if "://" in p or os.path.isabs(p) else os.path.join(base_dir, p) for p in src.path]
        cfg = SourceConfig(kind="files", paths=paths, format=src.format, limit=limit)
    else:
        cfg = SourceConfig(kind="hf", hf_name=src.hf, hf_config=src.hf_config, hf_split=src.split, limit=limit)
    text_fields = [v for k, v in task.columns.items() if k in ("query", "text", "text1", "text2")]
    text_sources = {c for v in text_fields for c in template_fields(v)}
    return open_mapped(cfg, {c: c for c in needed}, text_sources), None


def _corpus_for_positives(spec: TaskSetSpec) -> str | None:
    retrieval = [t for t in spec.tasks if t.type == RETRIEVAL]
    if not retrieval:
        return None
    if spec.corpus:
        return spec.corpus
    corpora = {t.source.corpus for t in retrieval}
    if len(corpora) == 1 and None not in corpora:
        return corpora.pop()
    raise InputError(f"{os.path.basename(spec.path) or 'spec'}: corpus: retrieval tasks need the corpus "
                     "their positive ids point into")


def build_tasks(spec: TaskSetSpec, catalog: Catalog, limit: int | None = None) -> BuildResult:
    import ray

    if limit is not None and limit <= 0:
        raise InputError(f"--limit must be positive, got {limit}")
    ensure_ray()
    base_dir = os.path.dirname(os.path.abspath(spec.path)) if spec.path else os.getcwd()
    inputs: dict[tuple, InputRef] = {}
    corpus_name = _corpus_for_positives(spec)
    corpus_ids = _corpus_ids(catalog, corpus_name, inputs) if corpus_name else None
    blocks = _task_blocks(spec, catalog, limit, base_dir, inputs)
    index_parts = ray.get([ray.remote(_select_index).remote(b) for b in blocks])
    index = pa.concat_tables(index_parts) if index_parts else WITH_STATUS.empty_table().select(INDEX_COLUMNS)
    plan = plan_examples(index, spec, corpus_ids)
    for name, s in plan.stats.items():
        log.info("build tasks: %s: %d rows in, %d examples, skipped: %s", name, s.rows_in, s.rows_out,
                 s.describe_skipped())
    empty = [name for name, s in plan.stats.items() if s.rows_out == 0]
    if empty:
        raise InputError(f"task {empty[0]} produced no usable examples "
                         f"(skipped: {plan.stats[empty[0]].skipped or 'no rows in source'})")
    kept, kept_sizes = _apply_on_blocks(blocks, [t.num_rows for t in index_parts], plan)
    config = {"built_by": BUILT_BY, "spec": spec_dict(spec, base_dir), "limit": limit, "corpus": corpus_name}
    with catalog.writer("examples", spec.name) as writer:
        write_blocks_ordered(kept, kept_sizes, writer.staging_dir, writer.filesystem, schema=EXAMPLES_SCHEMA)
        changes = staged_changes(writer, EXAMPLE_CHANGES)
        stats = {"tasks": {name: s.to_dict() for name, s in plan.stats.items()}, "changes": changes.to_dict()}
        manifest = writer.commit(config=config, inputs=list(inputs.values()), stats=stats, skip_if_unchanged=True)
        return BuildResult(manifest=manifest, unchanged=writer.unchanged, changes=changes)


def _corpus_ids(catalog: Catalog, name: str, inputs: dict[tuple, InputRef]) -> set[str]:
    manifest = catalog.manifest("corpus", name)
    inputs[("corpus", name, manifest.version)] = manifest.input_ref()
    ids = catalog.read_table("corpus", name, manifest.version, columns=["doc_id"])
    return set(ids.column("doc_id").to_pylist())


def _task_blocks(spec: TaskSetSpec, catalog: Catalog, limit: int | None, base_dir: str,
                 inputs: dict[tuple, InputRef]) -> list:
    """Every task's rows as Ray blocks (refs), task after task."""
    blocks = []
    for task in spec.tasks:
        log.info("build tasks: %s (%s) from %s", task.name, task.type, task.source.describe())
        ds, ref = _open_task_source(task, catalog, limit, base_dir)
        if ref:
            inputs[(ref.kind, ref.name, ref.version)] = ref
        rows = ds.map_batches(build_task_rows, fn_kwargs={"task": task, "spec": spec},
                              batch_format="pyarrow", batch_size=1024)
        # Blocks are gathered task by task: Dataset.union does not keep input order, and a
        # stable order is what lets an unchanged rebuild be recognised by its content hash.
        blocks.extend(rows.to_arrow_refs())
    return blocks


def _apply_on_blocks(blocks: list, sizes: list[int], plan: ExamplePlan) -> tuple[list, list[int]]:
    """The plan applied to each block in a Ray task: the kept blocks' refs and row counts."""
    import ray

    offsets = np.cumsum([0] + sizes)
    apply = ray.remote(_apply_plan)
    parts = [slice(offsets[i], offsets[i + 1]) for i in range(len(blocks))]
    kept = [apply.remote(b, plan.keep[at], plan.positive_ids[at], plan.positive[at]) for b, at in zip(blocks, parts)]
    return kept, [int(plan.keep[at].sum()) for at in parts]


def spec_dict(spec: TaskSetSpec, base_dir: str) -> dict:
    """The spec as the manifest records it: file sources with absolute paths, so that
    ``quarry refresh`` rebuilds from the same files whatever folder it runs in."""
    d = asdict(spec)
    d.pop("path", None)
    # A list, not a mapping: manifests are written with sorted keys, and the order of the
    # splits is part of how an example id maps to its split (assign_split).
    d["splits"] = [[name, fraction] for name, fraction in spec.splits.items()]
    for task in d["tasks"]:
        task["source"]["path"] = [p if "://" in p or os.path.isabs(p) else os.path.join(base_dir, p)
                                  for p in task["source"]["path"]]
    return d
