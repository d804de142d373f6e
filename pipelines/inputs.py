"""Reading an ``examples`` dataset the way every stage after it does (mine, export, eval):
which of its tasks to take, and the corpus version its retrieval positives point into.

Tested through the stages' tests: ``tests/pipelines/test_inputs.py``."""

from __future__ import annotations

import logging
from typing import Sequence

import pyarrow as pa

from storage import Catalog, InputError, Manifest

log = logging.getLogger("quarry")


def tasks_in(examples: pa.Table) -> dict[str, str]:
    """task -> task type, in order of first appearance."""
    types: dict[str, str] = {}
    for task, task_type in zip(examples.column("task").to_pylist(), examples.column("task_type").to_pylist()):
        types.setdefault(task, task_type)
    return types


def choose_tasks(types: dict[str, str], requested: Sequence[str], allowed: Sequence[str], where: str,
                 purpose: str) -> dict[str, str]:
    """The requested tasks (each checked), or every task of an ``allowed`` type.

    ``where`` names the data (``examples/vital``), ``purpose`` the stage in words, e.g.
    "hard negatives are mined for": both go into the one-line errors.
    """
    kinds = _words(allowed, "and")
    if requested:
        for task in requested:
            if task not in types:
                raise InputError(f"{where} has no task {task!r} (tasks: {', '.join(types) or 'none'})")
            if types[task] not in allowed:
                raise InputError(f"task {task} is a {types[task]} task: {purpose} {kinds} tasks")
        return {task: types[task] for task in requested}
    chosen = {task: ty for task, ty in types.items() if ty in allowed}
    left_out = [task for task, ty in types.items() if ty not in allowed]
    if left_out:
        log.info("%s: leaving out %s (%s %s tasks only)", where, ", ".join(left_out), purpose, kinds)
    if not chosen:
        raise InputError(f"{where} has no {_words(allowed, 'or')} task: {purpose} {kinds} tasks")
    return chosen


def _words(items: Sequence[str], conjunction: str) -> str:
    """("a", "b", "c") -> "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def examples_corpus(catalog: Catalog, examples: Manifest) -> Manifest:
    """The corpus version an examples version was built from (its retrieval positives' ids)."""
    name = examples.config.get("corpus")
    if not name:
        raise InputError(f"examples/{examples.name} {examples.version} does not name the corpus "
                         "its retrieval positives point into")
    version = next((i.version for i in examples.inputs if i.kind == "corpus" and i.name == name), None)
    return catalog.manifest("corpus", name, version)
