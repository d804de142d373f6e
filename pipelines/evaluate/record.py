"""Where ``quarry eval`` keeps its scores: ``eval.json`` beside a saved Quarry model, and the
append-only ``evals/<examples>`` dataset (view ``evals``).

Tested by tests/pipelines/evaluate/test_eval_ray.py.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa

from pipelines.evaluate.results import EvalResult, ModelEval
from storage import Catalog, DataRoot
from storage.schemas import EVALS_SCHEMA

EVALS_KIND = "evals"
EVAL_JSON = "eval.json"


def write_eval_json(root: DataRoot, model_dir: str, result: EvalResult, model_eval: ModelEval) -> None:
    """``eval.json`` beside the model, whole or not at all (it is left out of the model's fingerprint)."""
    path = posixpath.join(model_dir, EVAL_JSON)
    previous = {}
    if root.exists(path):
        try:
            previous = json.loads(root.read_bytes(path))
        except (OSError, ValueError):
            previous = {}
    runs = previous.get("evaluations", []) if isinstance(previous, dict) else []
    key = (result.examples, result.examples_version, result.split)
    runs = [r for r in runs if (r.get("examples"), r.get("examples_version"), r.get("split")) != key]
    runs.append({"examples": result.examples, "examples_version": result.examples_version, "split": result.split,
                 **model_eval.to_dict()})
    root.write_bytes_atomic(path, json.dumps({"evaluations": runs}, indent=2).encode("utf-8"))


def append_evals(catalog: Catalog, result: EvalResult, models: list[str], tasks: list[str]) -> str:
    """A new version of ``evals/<examples>``: the previous rows (by reference) plus these."""
    rows = [{"model": m.model, "model_kind": m.kind, "model_fingerprint": m.fingerprint, "task": s.task,
             "task_type": s.task_type, "split": result.split, "metric": s.metric, "value": s.value,
             "examples": result.examples, "examples_version": result.examples_version}
            for m in result.models for s in m.scores]
    table = pa.Table.from_pylist(rows, schema=EVALS_SCHEMA)
    latest = catalog.latest(EVALS_KIND, result.examples)
    previous = catalog.manifest(EVALS_KIND, result.examples, latest) if latest else None
    with catalog.writer(EVALS_KIND, result.examples) as writer:
        writer.write_table(table)
        examples = catalog.manifest("examples", result.examples, result.examples_version)
        manifest = writer.commit(config={"models": list(models), "split": result.split, "tasks": list(tasks)},
                                 inputs=[examples.input_ref()],
                                 carry=[(previous.version, f) for f in previous.files] if previous else [])
    return manifest.version
