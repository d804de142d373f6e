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
import pyarrow.compute as pc

from pipelines.builders.beir import beir_files
from pipelines.builders.pair_pool import add_to_corpus
from pipelines.builders.positives import CorpusIndex
from pipelines.builders.qrels import Qrels, load_qrels
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
    # Texts go to the driver only where the plan needs them: class-task queries (to pair
    # them) and text pairs' positives (to match them to the corpus).
    task_types = np.array(block.column("task_type").to_pylist(), dtype=object)
    is_class, is_retrieval = np.isin(task_types, CLASS_TYPES), task_types == RETRIEVAL
    query = pa.array([q if c else None for q, c in zip(block.column("query").to_pylist(), is_class)], pa.string())
    positive = pa.array([p if r else None for p, r in zip(block.column("positive").to_pylist(), is_retrieval)],
                        pa.string())
    index = block.select(INDEX_COLUMNS).set_column(INDEX_COLUMNS.index("query"), "query", query)
    return index.set_column(INDEX_COLUMNS.index("positive"), "positive", positive)


def _apply_plan(block: pa.Table, keep: np.ndarray, replacements: dict[str, list]) -> pa.Table:
    """``replacements``: column -> per row a new value, or None to keep the row's own."""
    for column, new_values in replacements.items():
        old = block.column(column).to_pylist()
        merged = [new if new is not None else was for was, new in zip(old, new_values)]
        block = block.set_column(block.column_names.index(column), column,
                                 pa.array(merged, EXAMPLES_SCHEMA.field(column).type))
    return block.filter(pa.array(keep)).drop_columns([STATUS])


def _task_files(task: TaskSpec, base_dir: str) -> tuple[list[str], list[str]]:
    """The task's query files and qrels files (absolute; a BEIR folder's, for a beir source)."""
    def absolute(p: str) -> str:
        return p if "://" in p or os.path.isabs(p) else os.path.join(base_dir, p)

    src = task.source
    if src.beir:
        files = beir_files(absolute(src.beir))
        return [files.queries], list(files.qrels)
    return [absolute(p) for p in src.path], [absolute(p) for p in src.qrels]


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
    if src.path or src.beir:
        cfg = SourceConfig(kind="files", paths=_task_files(task, base_dir)[0], format=src.format, limit=limit)
    else:
        cfg = SourceConfig(kind="hf", hf_name=src.hf, hf_config=src.hf_config, hf_split=src.split, limit=limit)
    text_fields = [v for k, v in task.columns.items() if k in ("query", "text", "text1", "text2", "positive")]
    text_sources = {c for v in text_fields for c in template_fields(v)}
    return open_mapped(cfg, {c: c for c in needed}, text_sources), None


def _corpus_for_positives(spec: TaskSetSpec) -> str | None:
    """The corpus the retrieval tasks' positives point into: the spec's, the one corpus
    their sources read, or, for text pairs alone, the examples' own name."""
    retrieval = [t for t in spec.tasks if t.type == RETRIEVAL]
    if not retrieval:
        return None
    if spec.corpus:
        return spec.corpus
    corpora = {t.source.corpus for t in retrieval if not t.is_pairs}
    if not corpora:
        return spec.name
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
    corpus = _corpus_index(catalog, corpus_name, spec, inputs) if corpus_name else None
    blocks, qrels = _task_blocks(spec, catalog, limit, base_dir, inputs)
    index_parts = ray.get([ray.remote(_select_index).remote(b) for b in blocks])
    index = pa.concat_tables(index_parts) if index_parts else WITH_STATUS.empty_table().select(INDEX_COLUMNS)
    plan = plan_examples(index, spec, corpus)
    _count_unjudged_queries(index, qrels, plan)
    _check_every_task_kept_examples(plan)
    if plan.added_docs:
        grown = add_to_corpus(catalog, corpus_name, plan.added_docs, spec.name)
        log.info("build tasks: corpus/%s %s: %d text pairs' positives added", corpus_name, grown.version,
                 len(plan.added_docs))
        inputs = {k: v for k, v in inputs.items() if k[:2] != ("corpus", corpus_name)}
        inputs[("corpus", corpus_name, grown.version)] = grown.input_ref()
    kept, kept_sizes = _apply_on_blocks(blocks, [t.num_rows for t in index_parts], plan)
    config = {"built_by": BUILT_BY, "spec": spec_dict(spec, base_dir), "limit": limit, "corpus": corpus_name}
    with catalog.writer("examples", spec.name) as writer:
        write_blocks_ordered(kept, kept_sizes, writer.staging_dir, writer.filesystem, schema=EXAMPLES_SCHEMA)
        changes = staged_changes(writer, EXAMPLE_CHANGES)
        stats = {"tasks": {name: s.to_dict() for name, s in plan.stats.items()}, "changes": changes.to_dict()}
        manifest = writer.commit(config=config, inputs=list(inputs.values()), stats=stats, skip_if_unchanged=True)
        return BuildResult(manifest=manifest, unchanged=writer.unchanged, changes=changes)


def _check_every_task_kept_examples(plan: ExamplePlan) -> None:
    for name, s in plan.stats.items():
        log.info("build tasks: %s: %d rows in, %d examples, skipped: %s", name, s.rows_in, s.rows_out,
                 s.describe_skipped())
    empty = [name for name, s in plan.stats.items() if s.rows_out == 0]
    if empty:
        skipped = plan.stats[empty[0]].describe_skipped() if plan.stats[empty[0]].skipped else "no rows in source"
        raise InputError(f"task {empty[0]} produced no usable examples (skipped: {skipped})")


def _corpus_index(catalog: Catalog, name: str, spec: TaskSetSpec, inputs: dict[tuple, InputRef]) -> CorpusIndex:
    """The corpus's ids and text hashes (empty where text pairs are to make the corpus)."""
    if catalog.latest("corpus", name) is None and all(t.is_pairs for t in spec.tasks if t.type == RETRIEVAL):
        return CorpusIndex()
    manifest = catalog.manifest("corpus", name)
    inputs[("corpus", name, manifest.version)] = manifest.input_ref()
    columns = [c for c in ("doc_id", "source_id", "content_hash") if c in manifest.arrow().names]
    return CorpusIndex.of(catalog.read_table("corpus", name, manifest.version, columns=columns))


def _task_blocks(spec: TaskSetSpec, catalog: Catalog, limit: int | None, base_dir: str,
                 inputs: dict[tuple, InputRef]) -> tuple[list, dict[str, Qrels]]:
    """Every task's rows as Ray blocks (refs), task after task; and the qrels of the tasks
    judged by them."""
    blocks, judged = [], {}
    for task in spec.tasks:
        log.info("build tasks: %s (%s) from %s", task.name, task.type, task.source.describe())
        ds, ref = _open_task_source(task, catalog, limit, base_dir)
        if ref:
            inputs[(ref.kind, ref.name, ref.version)] = ref
        qrels = load_qrels(_task_files(task, base_dir)[1]) if task.source.judged else None
        if qrels is not None:
            judged[task.name] = qrels
        rows = ds.map_batches(build_task_rows, fn_kwargs={"task": task, "spec": spec, "qrels": qrels},
                              batch_format="pyarrow", batch_size=1024)
        # Blocks are gathered task by task: Dataset.union does not keep input order, and a
        # stable order is what lets an unchanged rebuild be recognised by its content hash.
        blocks.extend(rows.to_arrow_refs())
    return blocks, judged


def _count_unjudged_queries(index: pa.Table, qrels: dict[str, Qrels], plan: ExamplePlan) -> None:
    """Per judged task: the query ids its qrels name that no row of its queries file has."""
    for task, judged in qrels.items():
        rows = index.filter(pc.equal(index.column("task"), task))
        seen = set(rows.column("source_id").to_pylist())
        plan.stats[task].qrels_naming_no_query = sum(1 for q in judged.by_query if q not in seen)


def _apply_on_blocks(blocks: list, sizes: list[int], plan: ExamplePlan) -> tuple[list, list[int]]:
    """The plan applied to each block in a Ray task: the kept blocks' refs and row counts."""
    import ray

    offsets = np.cumsum([0] + sizes)
    apply = ray.remote(_apply_plan)
    parts = [slice(offsets[i], offsets[i + 1]) for i in range(len(blocks))]
    kept = [apply.remote(b, plan.keep[at], {"positive_ids": plan.positive_ids[at],
                                            "positive_grades": plan.positive_grades[at],
                                            "positive": plan.positive[at]}) for b, at in zip(blocks, parts)]
    return kept, [int(plan.keep[at].sum()) for at in parts]


def spec_dict(spec: TaskSetSpec, base_dir: str) -> dict:
    """The spec as the manifest records it: file sources with absolute paths, so that
    ``quarry refresh`` rebuilds from the same files whatever folder it runs in."""
    d = asdict(spec)
    d.pop("path", None)
    # A list, not a mapping: manifests are written with sorted keys, and the order of the
    # splits is part of how an example id maps to its split (assign_split).
    d["splits"] = [[name, fraction] for name, fraction in spec.splits.items()]
    def absolute(p: str) -> str:
        return p if "://" in p or os.path.isabs(p) else os.path.join(base_dir, p)

    for task in d["tasks"]:
        source = task["source"]
        source["path"] = [absolute(p) for p in source["path"]]
        source["qrels"] = [absolute(p) for p in source["qrels"]]
        if source["beir"]:
            source["beir"] = absolute(source["beir"])
    return d
