"""The driver's plan over every task's rows: which survive, and the positives of class tasks.

Made from a few small columns of all rows at once (``INDEX_COLUMNS``), then applied per
block (``pipelines.builders.tasks``). Pure; tested directly by
``tests/pipelines/builders/test_task_plan.py``.

Class tasks are built the NV-Embed-v2 way: an example's positive is another example of the
same class in the same split, never the label text. Members of a (task, split, label)
group are ordered by a seeded hash of their ids and each is paired with the next, so
every example gets a different partner and the pairing survives a refresh of other rows
only where its neighbours stay the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from pipelines.builders.task_rows import OK, STATUS
from pipelines.builders.task_spec import TaskSetSpec
from storage import InputError
from storage.schemas import CLASS_TYPES, RETRIEVAL

INDEX_COLUMNS = ["task", "task_type", "example_id", "split", "label", "query", "positive_ids", STATUS]


@dataclass
class TaskBuildStats:
    """What became of one task's source rows (recorded in the examples manifest)."""

    type: str
    rows_in: int = 0
    rows_out: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # rows left out, by reason
    splits: dict[str, int] = field(default_factory=dict)  # examples kept, by split
    positive_ids_not_in_corpus: int = 0  # positives dropped from examples that kept others
    classes: int | None = None  # class tasks: distinct labels among its usable rows

    def to_dict(self) -> dict:
        """As the manifest records it: the counts that do not apply are left out."""
        d = asdict(self)
        if not self.positive_ids_not_in_corpus:
            d.pop("positive_ids_not_in_corpus")
        if self.classes is None:
            d.pop("classes")
        return d

    def describe_skipped(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"


@dataclass
class ExamplePlan:
    keep: np.ndarray  # bool per row
    positive_ids: list  # per row: a replacement list, or None to keep the row's own
    positive: list  # per row: a replacement text, or None
    stats: dict[str, TaskBuildStats]  # per task, in spec order


def pair_key(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"pair:{seed}:{example_id}".encode()).hexdigest()


def plan_examples(index: pa.Table, spec: TaskSetSpec, corpus_ids: set[str] | None) -> ExamplePlan:
    """Decide which rows survive and fill class-task positives (pure; tested directly)."""
    cols = {c: index.column(c).to_pylist() for c in INDEX_COLUMNS}
    n = index.num_rows
    status = list(cols[STATUS])
    plan = ExamplePlan(keep=np.zeros(n, dtype=bool), positive_ids=[None] * n, positive=[None] * n,
                       stats={t.name: TaskBuildStats(type=t.type) for t in spec.tasks})
    _drop_duplicates_and_missing_positives(cols, status, spec, corpus_ids, plan)
    groups = _pair_class_examples(cols, status, spec.seed, plan)
    plan.keep = np.array([s == OK for s in status], dtype=bool)
    for i in range(n):
        s = plan.stats[cols["task"][i]]
        s.rows_in += 1
        if plan.keep[i]:
            s.rows_out += 1
            s.splits[cols["split"][i]] = s.splits.get(cols["split"][i], 0) + 1
        else:
            s.skipped[status[i]] = s.skipped.get(status[i], 0) + 1
    for t in spec.tasks:
        if t.type in CLASS_TYPES:
            plan.stats[t.name].classes = len({k[2] for k in groups if k[0] == t.name})
    return plan


def _drop_duplicates_and_missing_positives(cols: dict, status: list, spec: TaskSetSpec, corpus_ids: set[str] | None,
                                           plan: ExamplePlan) -> None:
    """A repeated example id is a duplicate (an error where the spec maps ids); a retrieval
    example keeps the positives the corpus holds, and is dropped when it holds none."""
    explicit_id = {t.name for t in spec.tasks if "id" in t.columns}
    seen: set[str] = set()
    for i, eid in enumerate(cols["example_id"]):
        if status[i] != OK:
            continue
        task = cols["task"][i]
        if eid in seen:
            if task in explicit_id:
                raise InputError(f"task {task}: duplicate id {eid.split(':', 1)[1]!r}")
            status[i] = "duplicate"
            continue
        seen.add(eid)
        if cols["task_type"][i] != RETRIEVAL or corpus_ids is None:
            continue
        ids = cols["positive_ids"][i]
        present = [x for x in ids if x in corpus_ids]
        if not present:
            status[i] = "positive_not_in_corpus"
        elif len(present) < len(ids):
            plan.stats[task].positive_ids_not_in_corpus += len(ids) - len(present)
            plan.positive_ids[i] = present


def _pair_class_examples(cols: dict, status: list, seed: int, plan: ExamplePlan) -> dict[tuple, list[int]]:
    """Each class example's positive: the next member of its (task, split, label) group in
    a seeded order. A class with one member in a split is left out there."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, task_type in enumerate(cols["task_type"]):
        if status[i] == OK and task_type in CLASS_TYPES:
            groups.setdefault((cols["task"][i], cols["split"][i], cols["label"][i]), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            for i in members:
                status[i] = "singleton_class"
            continue
        members.sort(key=lambda i: pair_key(seed, cols["example_id"][i]))
        for j, i in enumerate(members):
            partner = members[(j + 1) % len(members)]
            plan.positive_ids[i] = [cols["example_id"][partner]]
            plan.positive[i] = cols["query"][partner]
    return groups
