"""``quarry build tasks``: instruction-task datasets as one ``examples`` table.

Per task: read the source (a corpus in the catalog, files, or a Hugging Face dataset) ->
``build_task_rows`` (map_batches: render the mapping, stable example id, split by hash)
-> one driver-side plan over small columns (duplicate ids, positives missing from the
corpus, NV-Embed-v2 class pairing) -> apply the plan per block -> write and commit.

Class tasks are built the NV-Embed-v2 way: an example's positive is another example of the
same class in the same split, never the label text. Members of a (task, split, label)
group are ordered by a seeded hash of their ids and each is paired with the next, so
every example gets a different partner and the pairing survives a refresh of other rows
only where its neighbours stay the same.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from pipelines.documents import clean_text, content_hash
from pipelines.ray_io import write_blocks_ordered
from pipelines.ray_runtime import ensure_ray
from pipelines.sources import SourceConfig, open_mapped
from pipelines.task_spec import TaskSetSpec, TaskSpec, render, template_fields
from pipelines.task_types import CLASS_TYPES, RETRIEVAL
from pipelines.wiki import BuildResult
from storage import Catalog, InputError, InputRef, stable_unit
from storage.changes import EXAMPLE_CHANGES, staged_changes

log = logging.getLogger("quarry")

EXAMPLES_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()),
    ("split", pa.string()), ("instruction", pa.string()), ("query", pa.string()),
    ("query_hash", pa.string()), ("positive_ids", pa.list_(pa.string())),
    ("positive", pa.string()), ("label", pa.string()), ("score", pa.float64()),
])
_WITH_STATUS = EXAMPLES_SCHEMA.append(pa.field("_status", pa.string()))
INDEX_COLUMNS = ["task", "task_type", "example_id", "split", "label", "query", "positive_ids", "_status"]

OK = "ok"
BUILT_BY = "quarry build tasks"  # the manifest's config says which builder made it (quarry refresh reads it)


def assign_split(example_id: str, seed: int, splits: dict[str, float]) -> str:
    """Deterministic split from the example id alone: refreshes keep old examples in place."""
    u = stable_unit(seed, example_id)
    cumulative = 0.0
    names = list(splits)
    for name in names:
        cumulative += splits[name]
        if u < cumulative:
            return name
    return names[-1]


def _text(value, task: TaskSpec, field_name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"task {task.name}: field {field_name!r} (from {task.columns[field_name]!r}) "
                         f"must be text, got {type(value).__name__}")
    return clean_text(value)


def _ids(value, task: TaskSpec) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                raise InputError(f"task {task.name}: positive_ids {stripped[:40]!r} is not a JSON list") from None
        else:
            return [stripped] if stripped else []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None and str(v) != ""]
    return [str(value)]


def build_task_rows(batch: pa.Table, task: TaskSpec, spec: TaskSetSpec) -> pa.Table:
    """Source rows of one task -> examples rows (with ``_status``) in input order."""
    rows = batch.to_pylist()
    out: dict[str, list] = {f.name: [] for f in _WITH_STATUS}
    instruction = spec.format_instruction(task.instruction)
    c = task.columns
    for row in rows:
        status = OK
        positive_ids: list[str] = []
        positive = label = None
        score = None
        if task.type == RETRIEVAL:
            query = _text(render(c["query"], row), task, "query")
            positive_ids = _ids(render(c["positive_ids"], row), task)
            if not positive_ids:
                status = "no_positive"
        elif task.type in CLASS_TYPES:
            query = _text(render(c["text"], row), task, "text")
            raw_label = render(c["label"], row)
            label = None if raw_label is None else str(raw_label).strip() or None
            if label is None:
                status = "missing_label"
            elif label in task.exclude_labels:
                status = "excluded_label"
        else:  # sts, pair
            query = _text(render(c["text1"], row), task, "text1")
            positive = _text(render(c["text2"], row), task, "text2") or None
            if positive is None:
                status = "empty_positive"
            if task.type == "sts":
                raw = render(c["score"], row)
                try:
                    score = None if raw is None else float(raw)
                except (TypeError, ValueError):
                    raise InputError(f"task {task.name}: field 'score' must be a number, got {raw!r}") from None
                if score is None:
                    status = "missing_score"
            else:
                raw_label = render(c["label"], row)
                label = None if raw_label is None else str(raw_label)
                if label is None:
                    status = "missing_label"
                elif label in task.exclude_labels:
                    status = "excluded_label"
        if not query:
            status = "empty_query"
        if "id" in c:
            key = render(c["id"], row)
            if key is None or str(key) == "":
                raise InputError(f"task {task.name}: a row has an empty id (column {c['id']!r})")
            key = str(key)
        else:
            # Derived from the content: the same row always gets the same id.
            key = hashlib.sha256("\x00".join([query, *positive_ids, positive or "", label or ""]).encode()
                                 ).hexdigest()[:16]
        example_id = f"{task.name}:{key}"
        out["task"].append(task.name)
        out["task_type"].append(task.type)
        out["example_id"].append(example_id)
        out["split"].append(assign_split(example_id, spec.seed, spec.splits))
        out["instruction"].append(instruction)
        out["query"].append(query)
        out["query_hash"].append(content_hash(query))
        out["positive_ids"].append(positive_ids)
        out["positive"].append(positive)
        out["label"].append(label)
        out["score"].append(score)
        out["_status"].append(status)
    return pa.Table.from_pydict(out, schema=_WITH_STATUS)


@dataclass
class ExamplePlan:
    keep: np.ndarray  # bool per row
    positive_ids: list  # per row: a replacement list, or None to keep the row's own
    positive: list  # per row: a replacement text, or None
    stats: dict  # per task


def pair_key(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"pair:{seed}:{example_id}".encode()).hexdigest()


def plan_examples(index: pa.Table, spec: TaskSetSpec, corpus_ids: set[str] | None) -> ExamplePlan:
    """Decide which rows survive and fill class-task positives (pure; tested directly)."""
    cols = {c: index.column(c).to_pylist() for c in INDEX_COLUMNS}
    n = index.num_rows
    status = list(cols["_status"])
    explicit_id = {t.name for t in spec.tasks if "id" in t.columns}
    new_ids: list = [None] * n
    new_pos: list = [None] * n
    dropped_positives = {t.name: 0 for t in spec.tasks}

    seen: dict[str, int] = {}
    for i in range(n):
        if status[i] != OK:
            continue
        eid = cols["example_id"][i]
        if eid in seen:
            if cols["task"][i] in explicit_id:
                raise InputError(f"task {cols['task'][i]}: duplicate id {eid.split(':', 1)[1]!r}")
            status[i] = "duplicate"
            continue
        seen[eid] = i
        if cols["task_type"][i] == RETRIEVAL and corpus_ids is not None:
            ids = cols["positive_ids"][i]
            present = [x for x in ids if x in corpus_ids]
            if not present:
                status[i] = "positive_not_in_corpus"
            elif len(present) < len(ids):
                dropped_positives[cols["task"][i]] += len(ids) - len(present)
                new_ids[i] = present

    groups: dict[tuple[str, str, str], list[int]] = {}
    for i in range(n):
        if status[i] == OK and cols["task_type"][i] in CLASS_TYPES:
            groups.setdefault((cols["task"][i], cols["split"][i], cols["label"][i]), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            for i in members:
                status[i] = "singleton_class"
            continue
        members.sort(key=lambda i: pair_key(spec.seed, cols["example_id"][i]))
        for j, i in enumerate(members):
            partner = members[(j + 1) % len(members)]
            new_ids[i] = [cols["example_id"][partner]]
            new_pos[i] = cols["query"][partner]

    keep = np.array([s == OK for s in status], dtype=bool)
    stats: dict[str, dict] = {}
    for t in spec.tasks:
        stats[t.name] = {"type": t.type, "rows_in": 0, "rows_out": 0, "skipped": {}, "splits": {}}
    for i in range(n):
        s = stats[cols["task"][i]]
        s["rows_in"] += 1
        if keep[i]:
            s["rows_out"] += 1
            s["splits"][cols["split"][i]] = s["splits"].get(cols["split"][i], 0) + 1
        else:
            s["skipped"][status[i]] = s["skipped"].get(status[i], 0) + 1
    for t in spec.tasks:
        if dropped_positives[t.name]:
            stats[t.name]["positive_ids_not_in_corpus"] = dropped_positives[t.name]
        if t.type in CLASS_TYPES:
            stats[t.name]["classes"] = len({k[2] for k in groups if k[0] == t.name})
    return ExamplePlan(keep=keep, positive_ids=new_ids, positive=new_pos, stats=stats)


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
    return block.filter(pa.array(keep)).drop_columns(["_status"])


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
    corpus_ids = None
    if corpus_name:
        corpus_manifest = catalog.manifest("corpus", corpus_name)
        inputs[("corpus", corpus_name, corpus_manifest.version)] = corpus_manifest.input_ref()
        ids = catalog.read_table("corpus", corpus_name, corpus_manifest.version, columns=["doc_id"])
        corpus_ids = set(ids.column("doc_id").to_pylist())
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
    index_parts = ray.get([ray.remote(_select_index).remote(b) for b in blocks])
    sizes = [t.num_rows for t in index_parts]
    index = pa.concat_tables(index_parts) if index_parts else _WITH_STATUS.empty_table().select(INDEX_COLUMNS)
    plan = plan_examples(index, spec, corpus_ids)
    for name, s in plan.stats.items():
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped"].items())) or "none"
        log.info("build tasks: %s: %d rows in, %d examples, skipped: %s", name, s["rows_in"], s["rows_out"], skipped)
    empty = [name for name, s in plan.stats.items() if s["rows_out"] == 0]
    if empty:
        raise InputError(f"task {empty[0]} produced no usable examples "
                         f"(skipped: {plan.stats[empty[0]]['skipped'] or 'no rows in source'})")
    offsets = np.cumsum([0] + sizes)
    apply = ray.remote(_apply_plan)
    kept = [apply.remote(b, plan.keep[offsets[i]:offsets[i + 1]], plan.positive_ids[offsets[i]:offsets[i + 1]],
                         plan.positive[offsets[i]:offsets[i + 1]]) for i, b in enumerate(blocks)]
    kept_sizes = [int(plan.keep[offsets[i]:offsets[i + 1]].sum()) for i in range(len(blocks))]
    config = {"built_by": BUILT_BY, "spec": spec_dict(spec, base_dir), "limit": limit, "corpus": corpus_name}
    with catalog.writer("examples", spec.name) as writer:
        write_blocks_ordered(kept, kept_sizes, writer.staging_dir, writer.filesystem, schema=EXAMPLES_SCHEMA)
        changes = staged_changes(writer, EXAMPLE_CHANGES)
        manifest = writer.commit(config=config, inputs=list(inputs.values()),
                                 stats={"tasks": plan.stats, "changes": changes.to_dict()}, skip_if_unchanged=True)
        return BuildResult(manifest=manifest, unchanged=writer.unchanged, stats=plan.stats, changes=changes)


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
