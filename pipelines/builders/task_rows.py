"""Source rows of one task -> examples rows: the task's mapping rendered, a stable example
id, and a split drawn from that id alone.

Pure, per batch (``map_batches`` in ``pipelines.builders.tasks``); tested directly by
``tests/pipelines/builders/test_task_rows.py``.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from pipelines.builders.documents import clean_text, content_hash
from pipelines.builders.qrels import Qrels
from pipelines.builders.task_spec import TaskSetSpec, TaskSpec, render
from storage import InputError, stable_unit
from storage.schemas import CLASS_TYPES, EXAMPLES_SCHEMA, RETRIEVAL, STS

STATUS = "_status"  # per row: OK, or why the row is left out (counted in the task's stats)
WITH_STATUS = EXAMPLES_SCHEMA.append(pa.field(STATUS, pa.string()))
OK = "ok"


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


def _label(task: TaskSpec, row: dict, strip: bool) -> tuple[str | None, str]:
    """(label, status) of a labelled row."""
    raw = render(task.columns["label"], row)
    label = None if raw is None else (str(raw).strip() or None if strip else str(raw))
    if label is None:
        return None, "missing_label"
    return label, "excluded_label" if label in task.exclude_labels else OK


def _retrieval_fields(task: TaskSpec, row: dict, qrels: Qrels | None) -> dict:
    """A query with its positives: ids of the row, the row's positive text (a text pair), or
    the judgements qrels hold for the row's id (which also fix its split)."""
    c = task.columns
    out = {"query": _text(render(c["query"], row), task, "query")}
    if task.is_pairs:
        out["positive"] = _text(render(c["positive"], row), task, "positive") or None
        out[STATUS] = OK if out["positive"] is not None else "empty_positive"
        return out
    if qrels is None:
        out["positive_ids"] = _ids(render(c["positive_ids"], row), task)
        out[STATUS] = OK if out["positive_ids"] else "no_positive"
        return out
    judged = qrels.positives(_row_id(task, row))
    if judged is None:
        out[STATUS] = "not_in_qrels"  # a query of another split's qrels, or judged nowhere
        return out
    out["positive_ids"] = [doc for doc, _ in judged.positives]
    out["positive_grades"] = [grade for _, grade in judged.positives]
    out["split"] = judged.split
    out[STATUS] = OK if judged.positives else "no_positive"
    return out


def _fields(task: TaskSpec, row: dict, qrels: Qrels | None) -> dict:
    """The rendered fields of one source row, by task type, with the row's status."""
    c = task.columns
    if task.type == RETRIEVAL:
        return _retrieval_fields(task, row, qrels)
    if task.type in CLASS_TYPES:
        label, status = _label(task, row, strip=True)
        return {"query": _text(render(c["text"], row), task, "text"), "label": label, STATUS: status}
    positive = _text(render(c["text2"], row), task, "text2") or None
    out = {"query": _text(render(c["text1"], row), task, "text1"), "positive": positive,
           STATUS: OK if positive is not None else "empty_positive"}
    if task.type == STS:
        raw = render(c["score"], row)
        try:
            out["score"] = None if raw is None else float(raw)
        except (TypeError, ValueError):
            raise InputError(f"task {task.name}: field 'score' must be a number, got {raw!r}") from None
        if out["score"] is None:
            out[STATUS] = "missing_score"
    else:  # pair
        out["label"], status = _label(task, row, strip=False)
        if status != OK:
            out[STATUS] = status
    return out


def _row_id(task: TaskSpec, row: dict) -> str:
    key = render(task.columns["id"], row)
    if key is None or str(key) == "":
        raise InputError(f"task {task.name}: a row has an empty id (column {task.columns['id']!r})")
    return str(key)


def _example_key(task: TaskSpec, row: dict, fields: dict) -> str:
    """The row's own id when the task maps one, else one derived from its content (the
    same row always gets the same id). A text pair's id is its query's alone: pairs that
    share a query are one example with several positives (``pipelines.builders.task_plan``)."""
    if "id" in task.columns:
        return _row_id(task, row)
    if task.is_pairs:
        parts = [fields["query"]]
    else:
        parts = [fields["query"], *fields.get("positive_ids", []), fields.get("positive") or "",
                 fields.get("label") or ""]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def build_task_rows(batch: pa.Table, task: TaskSpec, spec: TaskSetSpec, qrels: Qrels | None = None) -> pa.Table:
    """Source rows of one task -> examples rows (with ``_status``) in input order.
    ``qrels``: the judgements of a task whose source has them."""
    out: dict[str, list] = {f.name: [] for f in WITH_STATUS}
    instruction = spec.format_instruction(task.instruction)
    for row in batch.to_pylist():
        fields = _fields(task, row, qrels)
        if not fields["query"] and fields[STATUS] != "not_in_qrels":
            fields[STATUS] = "empty_query"
        key = _example_key(task, row, fields)
        example_id = f"{task.name}:{key}"
        values = {"task": task.name, "task_type": task.type, "example_id": example_id,
                  "source_id": key if "id" in task.columns else None,
                  "split": fields.get("split") or assign_split(example_id, spec.seed, spec.splits),
                  "instruction": instruction, "query": fields["query"], "query_hash": content_hash(fields["query"]),
                  "positive_ids": fields.get("positive_ids", []), "positive_grades": fields.get("positive_grades"),
                  "positive": fields.get("positive"), "label": fields.get("label"), "score": fields.get("score"),
                  STATUS: fields[STATUS]}
        for name, value in values.items():
            out[name].append(value)
    return pa.Table.from_pydict(out, schema=WITH_STATUS)
