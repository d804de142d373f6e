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

from pipelines.builders.positives import CorpusIndex, id_kind, positive_doc, resolve_ids
from pipelines.builders.task_rows import OK, STATUS
from pipelines.builders.task_spec import TaskSetSpec
from storage import InputError
from storage.schemas import CLASS_TYPES, RETRIEVAL

INDEX_COLUMNS = ["task", "task_type", "example_id", "source_id", "split", "label", "query", "positive_ids",
                 "positive_grades", "positive", STATUS]
SAME_QUERY = "same_query"  # a text pair whose query an earlier pair has: its positive joins that example


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
    positives_added_to_corpus: int = 0  # text pairs: positives the corpus lacked, added to it
    qrels_naming_no_query: int = 0  # qrels: judged query ids that no row of the queries file has

    def to_dict(self) -> dict:
        """As the manifest records it: the counts that do not apply are left out."""
        return {k: v for k, v in asdict(self).items()
                if not (k in ("positive_ids_not_in_corpus", "positives_added_to_corpus", "qrels_naming_no_query")
                        and not v) and not (k == "classes" and v is None)}

    def describe_skipped(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"


@dataclass
class ExamplePlan:
    keep: np.ndarray  # bool per row
    positive_ids: list  # per row: a replacement list, or None to keep the row's own
    positive_grades: list  # per row: a replacement list, or None to keep the row's own
    positive: list  # per row: a replacement text, or None
    stats: dict[str, TaskBuildStats]  # per task, in spec order
    added_docs: dict[str, tuple[str, str]] = field(default_factory=dict)  # text pairs: hash -> (doc id, text)


def pair_key(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"pair:{seed}:{example_id}".encode()).hexdigest()


def plan_examples(index: pa.Table, spec: TaskSetSpec, corpus: CorpusIndex | None) -> ExamplePlan:
    """Decide which rows survive, which documents their positives are, and the positives of
    class tasks (pure; tested directly). ``corpus``: the corpus retrieval positives point
    into (None: no task has any)."""
    cols = {c: index.column(c).to_pylist() for c in INDEX_COLUMNS}
    n = index.num_rows
    status = list(cols[STATUS])
    plan = ExamplePlan(keep=np.zeros(n, dtype=bool), positive_ids=[None] * n, positive_grades=[None] * n,
                       positive=[None] * n, stats={t.name: TaskBuildStats(type=t.type) for t in spec.tasks})
    same_query = _drop_duplicates(cols, status, spec)
    if corpus is not None:
        _resolve_positives(cols, status, spec, corpus, plan)
    _merge_same_query(same_query, cols, status, plan)
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


def _drop_duplicates(cols: dict, status: list, spec: TaskSetSpec) -> dict[int, list[int]]:
    """A repeated example id is a duplicate (an error where the spec maps ids), except in a
    text-pair task, where it is the same query with another positive: returns, per first
    row of such a query, the later rows to merge into it."""
    explicit_id = {t.name for t in spec.tasks if "id" in t.columns}
    pairs = {t.name for t in spec.tasks if t.is_pairs}
    first: dict[str, int] = {}
    same_query: dict[int, list[int]] = {}
    for i, eid in enumerate(cols["example_id"]):
        if status[i] != OK:
            continue
        task = cols["task"][i]
        if eid not in first:
            first[eid] = i
        elif task in pairs and task not in explicit_id:
            same_query.setdefault(first[eid], []).append(i)
        elif task in explicit_id:
            raise InputError(f"task {task}: duplicate id {eid.split(':', 1)[1]!r}")
        else:
            status[i] = "duplicate"
    return same_query


def _resolve_positives(cols: dict, status: list, spec: TaskSetSpec, corpus: CorpusIndex, plan: ExamplePlan) -> None:
    """Each retrieval example's positives as corpus doc ids; an example whose positives the
    corpus holds none of is dropped (``positive_not_in_corpus``)."""
    for task in spec.tasks:
        if task.type != RETRIEVAL:
            continue
        rows = [i for i, name in enumerate(cols["task"]) if name == task.name and status[i] == OK]
        kind = None if task.is_pairs else id_kind(task.name, task.positives, [cols["positive_ids"][i] for i in rows],
                                                    corpus)
        for i in rows:
            if task.is_pairs:
                plan.positive_ids[i] = [positive_doc(cols["positive"][i], corpus, plan.added_docs)]
                continue
            ids, grades, missing = resolve_ids(cols["positive_ids"][i], cols["positive_grades"][i], kind, corpus)
            if not ids:
                status[i] = "positive_not_in_corpus"
                continue
            plan.stats[task.name].positive_ids_not_in_corpus += missing
            if ids != cols["positive_ids"][i] or grades != cols["positive_grades"][i]:
                plan.positive_ids[i], plan.positive_grades[i] = ids, grades
    added = {task.name: 0 for task in spec.tasks}
    counted: set[str] = set()
    for i, ids in enumerate(plan.positive_ids):
        task = cols["task"][i]
        if ids and task in added and ids[0] not in corpus.doc_ids and ids[0] not in counted:
            counted.add(ids[0])
            added[task] += 1
    for task, count in added.items():
        plan.stats[task].positives_added_to_corpus = count


def _merge_same_query(same_query: dict[int, list[int]], cols: dict, status: list, plan: ExamplePlan) -> None:
    """Text pairs that share a query become one example: the first row's, with every
    row's positive (sentence-transformers reads duplicate anchors the same way)."""
    for first, later in same_query.items():
        ids = list(plan.positive_ids[first] or [])
        for i in later:
            for d in plan.positive_ids[i] or []:
                if d not in ids:
                    ids.append(d)
            status[i] = SAME_QUERY
        plan.positive_ids[first] = ids


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
