"""The evaluation data of every task of an examples split, read from the catalog: what
``evaluation.mteb_tasks`` turns into mteb tasks."""

from __future__ import annotations

import logging
from typing import Sequence

from evaluation.mteb_tasks import EVALUABLE_TYPES, TaskData
from pipelines.inputs import choose_tasks, examples_corpus, tasks_in
from storage import Catalog, InputError
from storage.schemas import CLASSIFICATION, CLUSTERING, RETRIEVAL
from storage.seeding import stable_unit

log = logging.getLogger("quarry")

# mteb's classification protocol draws samples_per_label (8) examples per class from the
# train split in each of n_experiments (10) experiments. The train pool handed to mteb is a
# seeded sample of 8 x 10 per class, so that every text it can draw is embedded up front
# rather than the whole train split (8,087 extracts on the vital set).
CLASSIFICATION_POOL_PER_LABEL = 8 * 10


def load_task_data(catalog: Catalog, examples_name: str, version: str | None, split: str,
                   tasks: Sequence[str]) -> tuple[list[TaskData], str]:
    """Every chosen task's evaluation data (``tasks``, or every evaluable task), and the
    examples version read (``version``, or the latest)."""
    manifest = catalog.manifest("examples", examples_name, version)
    columns = ["task", "task_type", "example_id", "split", "instruction", "query", "positive_ids", "positive_grades",
               "positive", "label", "score"]
    examples = catalog.read_table("examples", examples_name, manifest.version,
                                  columns=[c for c in columns if c in manifest.arrow().names])
    chosen = choose_tasks(tasks_in(examples), tasks, EVALUABLE_TYPES, f"examples/{examples_name}",
                          "quarry eval scores")
    corpus: dict[str, str] | None = None
    out = []
    rows_by_task: dict[str, list[dict]] = {}
    for row in examples.to_pylist():
        if row["task"] in chosen:
            rows_by_task.setdefault(row["task"], []).append(row)
    for task, task_type in chosen.items():
        rows = rows_by_task[task]
        scored = [r for r in rows if r["split"] == split]
        if not scored:
            if tasks:  # named by the user: say so
                raise InputError(f"task {task} has no examples in the {split} split of examples/{examples_name}")
            # Every task by default: a small build (--limit) can leave a task without one.
            log.warning("eval: leaving out %s: no examples in the %s split of examples/%s", task, split,
                        examples_name)
            continue
        data = TaskData(name=task, task_type=task_type, split=split, instruction=scored[0]["instruction"] or "")
        if task_type == RETRIEVAL:
            if corpus is None:
                corpus_m = examples_corpus(catalog, manifest)
                table = catalog.read_table("corpus", corpus_m.name, corpus_m.version, columns=["doc_id", "text"])
                corpus = dict(zip(table.column("doc_id").to_pylist(), table.column("text").to_pylist()))
            data.corpus = corpus
            data.queries = {r["example_id"]: r["query"] for r in scored}
            # Graded where the qrels gave grades (mteb's nDCG reads them), else every positive 1.
            data.qrels = {r["example_id"]: dict(zip(r["positive_ids"], r.get("positive_grades") or
                                                    [1] * len(r["positive_ids"]))) for r in scored}
        elif task_type == CLASSIFICATION:
            if split == "train":
                raise InputError("classification fits its classifier on the train split: use --split dev or test")
            train = _classification_pool([r for r in rows if r["split"] == "train"], task)
            data.train_texts, data.train_labels = [r["query"] for r in train], [r["label"] for r in train]
            data.texts, data.labels = [r["query"] for r in scored], [r["label"] for r in scored]
        elif task_type == CLUSTERING:
            data.texts, data.labels = [r["query"] for r in scored], [r["label"] for r in scored]
        else:  # sts
            data.pairs = [(r["query"], r["positive"]) for r in scored]
            data.scores = [float(r["score"]) for r in scored]
        out.append(data)
    if not out:
        raise InputError(f"examples/{examples_name} has no examples in the {split} split to score")
    return out, manifest.version


def _classification_pool(train: list[dict], task: str) -> list[dict]:
    """Up to CLASSIFICATION_POOL_PER_LABEL train examples per class, chosen by a seeded hash."""
    by_label: dict[str, list[dict]] = {}
    for r in sorted(train, key=lambda r: stable_unit("eval-train-pool", task, r["example_id"])):
        members = by_label.setdefault(r["label"], [])
        if len(members) < CLASSIFICATION_POOL_PER_LABEL:
            members.append(r)
    return [r for label in sorted(by_label) for r in by_label[label]]
