"""How the negatives moved between two mining runs of the same name: the drift report.

Pure, one function per output, tested directly. Per query, the previous and the new set of
negative ids are compared:

| change    | the query was mined ...                    | jaccard                       |
|-----------|--------------------------------------------|-------------------------------|
| same      | both times, with the identical set         | 1.0                           |
| changed   | both times, with another set               | \|prev & new\| / \|prev \| new\| |
| added     | only now (a new example, or a new positive) | null                          |
| removed   | only before (its example was deleted)      | null                          |

Per task, the report adds the shift of the positive and negative score distributions
(quantiles before and after), the false negatives flagged now that were not before (a
candidate rejected as a positive's duplicate, a same-text query's positive, or above the
positive-aware threshold), and the previous negatives that are gone because their document
was deleted or its text changed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from miners.report import png_bytes
from miners.select import ABOVE_THRESHOLD, DUPLICATE_OF_POSITIVE, OTHER_QUERY_POSITIVE
from storage import format_table

SAME, CHANGED, ADDED, REMOVED = "same", "changed", "added", "removed"
CHANGES = (SAME, CHANGED, ADDED, REMOVED)
# Rejection reasons that mark a candidate as a (likely) false negative.
FALSE_NEGATIVE_REASONS = (DUPLICATE_OF_POSITIVE, OTHER_QUERY_POSITIVE, ABOVE_THRESHOLD)
QUANTILES = (0.1, 0.5, 0.9)

DRIFT_SCHEMA = pa.schema([
    ("task", pa.string()), ("example_id", pa.string()), ("change", pa.string()), ("jaccard", pa.float64()),
    ("previous_negatives", pa.int32()), ("negatives", pa.int32()), ("previous_version", pa.string()),
    ("version", pa.string()),
])


@dataclass
class MinedRun:
    """What drift needs of one mining run.

    ``queries``: task, example_id, positive_score (one row per mined query);
    ``negatives``: task, example_id, neg_id, neg_score (and ``neg_hash``, the content hash of
    the negative's text, for the previous run); ``flagged``: task, example_id, cand_id of
    candidates rejected for a reason in ``FALSE_NEGATIVE_REASONS``.
    """

    version: str
    queries: pa.Table
    negatives: pa.Table
    flagged: pa.Table


@dataclass
class TaskDrift:
    same: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0
    mean_jaccard_changed: float | None = None  # over the changed queries only
    positive_quantiles: dict[str, list[float | None]] = field(default_factory=dict)  # "before"/"after": p10,p50,p90
    negative_quantiles: dict[str, list[float | None]] = field(default_factory=dict)
    new_false_negatives: int = 0  # flagged now, not flagged before (queries in both runs)
    lost_to_deleted: int = 0  # previous negatives gone because their document is no longer in the pool
    lost_to_changed: int = 0  # ... because their document's text changed


def _by_query(negatives: pa.Table) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for task, eid, nid in zip(*(negatives.column(c).to_pylist() for c in ("task", "example_id", "neg_id"))):
        out[(task, eid)].add(nid)
    return out


def _query_keys(queries: pa.Table) -> list[tuple[str, str]]:
    return list(zip(queries.column("task").to_pylist(), queries.column("example_id").to_pylist()))


def query_drift(previous: MinedRun, new: MinedRun) -> pa.Table:
    """One row per query mined in either run (``DRIFT_SCHEMA``), new queries' order first."""
    prev_sets, new_sets = _by_query(previous.negatives), _by_query(new.negatives)
    prev_keys, new_keys = _query_keys(previous.queries), _query_keys(new.queries)
    prev_known = set(prev_keys)
    rows: dict[str, list] = {f.name: [] for f in DRIFT_SCHEMA}

    def add(key, change, jaccard, n_prev, n_new):
        for name, value in zip(DRIFT_SCHEMA.names, (*key, change, jaccard, n_prev, n_new, previous.version,
                                                    new.version)):
            rows[name].append(value)

    for key in new_keys:
        now = new_sets.get(key, set())
        if key not in prev_known:
            add(key, ADDED, None, None, len(now))
            continue
        before = prev_sets.get(key, set())
        union = before | now
        jaccard = len(before & now) / len(union) if union else 1.0
        add(key, SAME if before == now else CHANGED, jaccard, len(before), len(now))
    new_known = set(new_keys)
    for key in prev_keys:
        if key not in new_known:
            add(key, REMOVED, None, len(prev_sets.get(key, set())), None)
    return pa.Table.from_pydict(rows, schema=DRIFT_SCHEMA)


def _quantiles(values: np.ndarray) -> list[float | None]:
    if not len(values):
        return [None] * len(QUANTILES)
    return [round(float(q), 4) for q in np.quantile(values, QUANTILES)]


def _scores_by_task(table: pa.Table, column: str) -> dict[str, np.ndarray]:
    out: dict[str, list] = defaultdict(list)
    for task, score in zip(table.column("task").to_pylist(), table.column(column).to_pylist()):
        if score is not None:
            out[task].append(score)
    return {t: np.asarray(v, dtype=np.float64) for t, v in out.items()}


def task_drift(previous: MinedRun, new: MinedRun, rows: pa.Table,
               pool_hashes: dict[str, dict[str, str]]) -> dict[str, TaskDrift]:
    """Per task summary. ``pool_hashes``: task -> candidate id -> content hash of its text
    in the pool the new run searched (a missing id was deleted)."""
    out: dict[str, TaskDrift] = defaultdict(TaskDrift)
    jaccards: dict[str, list[float]] = defaultdict(list)
    in_both: set[tuple[str, str]] = set()
    for task, eid, change, jaccard in zip(*(rows.column(c).to_pylist()
                                            for c in ("task", "example_id", "change", "jaccard"))):
        drift = out[task]
        setattr(drift, change, getattr(drift, change) + 1)
        if change == CHANGED:
            jaccards[task].append(jaccard)
        if change in (SAME, CHANGED):
            in_both.add((task, eid))
    for task, values in jaccards.items():
        out[task].mean_jaccard_changed = round(float(np.mean(values)), 4)
    for label, run in (("before", previous), ("after", new)):
        for task, scores in _scores_by_task(run.queries, "positive_score").items():
            out[task].positive_quantiles[label] = _quantiles(scores)
        for task, scores in _scores_by_task(run.negatives, "neg_score").items():
            out[task].negative_quantiles[label] = _quantiles(scores)
    before_flagged = set(zip(*(previous.flagged.column(c).to_pylist() for c in ("task", "example_id", "cand_id"))))
    for task, eid, cid in zip(*(new.flagged.column(c).to_pylist() for c in ("task", "example_id", "cand_id"))):
        if (task, eid) in in_both and (task, eid, cid) not in before_flagged:
            out[task].new_false_negatives += 1
    now_sets = _by_query(new.negatives)
    columns = ("task", "example_id", "neg_id", "neg_hash")
    for task, eid, nid, old_hash in zip(*(previous.negatives.column(c).to_pylist() for c in columns)):
        if (task, eid) not in in_both or nid in now_sets.get((task, eid), ()):
            continue
        current = pool_hashes.get(task, {}).get(nid)
        if current is None:
            out[task].lost_to_deleted += 1
        elif current != old_hash:
            out[task].lost_to_changed += 1
    return dict(sorted(out.items()))


def drift_dict(drift: dict[str, TaskDrift]) -> dict[str, dict]:
    return {task: asdict(d) for task, d in drift.items()}


def _q(values: dict[str, list], label: str) -> str:
    middle = values.get(label, [None, None, None])[1]
    return "-" if middle is None else f"{middle:.3f}"


def format_drift(drift: dict[str, TaskDrift], previous_version: str, version: str) -> str:
    header = ("task", "same", "changed", "mean J", "added", "removed", "pos p50", "neg p50", "new FN",
              "lost: deleted", "lost: changed")
    rows = []
    for task, d in drift.items():
        rows.append((task, str(d.same), str(d.changed),
                     "-" if d.mean_jaccard_changed is None else f"{d.mean_jaccard_changed:.3f}", str(d.added),
                     str(d.removed), f"{_q(d.positive_quantiles, 'before')} -> {_q(d.positive_quantiles, 'after')}",
                     f"{_q(d.negative_quantiles, 'before')} -> {_q(d.negative_quantiles, 'after')}",
                     str(d.new_false_negatives), str(d.lost_to_deleted), str(d.lost_to_changed)))
    title = (f"drift of the negatives, {previous_version} -> {version} (queries with the same or a changed set; "
             "mean J: Jaccard of the changed ones; new FN: false negatives flagged now, not before)")
    return title + "\n" + format_table(header, rows)


def plot_drift(rows: pa.Table, previous: MinedRun, new: MinedRun) -> bytes:
    """PNG, one row per task: the Jaccard of queries mined both times, and the negative
    scores before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(set(rows.column("task").to_pylist()))
    fig, axes = plt.subplots(max(1, len(tasks)), 2, figsize=(10, 2.6 * max(1, len(tasks))), squeeze=False)
    jacc: dict[str, list[float]] = defaultdict(list)
    for task, j in zip(rows.column("task").to_pylist(), rows.column("jaccard").to_pylist()):
        if j is not None:
            jacc[task].append(j)
    before, after = _scores_by_task(previous.negatives, "neg_score"), _scores_by_task(new.negatives, "neg_score")
    for (left, right), task in zip(axes, tasks):
        left.hist(jacc.get(task, []), bins=np.linspace(0, 1, 21), color="tab:purple")
        left.set_title(f"{task}: Jaccard of the negative sets", fontsize=9)
        left.set_xlabel(f"Jaccard ({previous.version} vs {new.version})")
        bins = np.linspace(-0.2, 1.0, 61)
        right.hist(before.get(task, []), bins=bins, alpha=0.5, label=previous.version, color="tab:gray")
        right.hist(after.get(task, []), bins=bins, alpha=0.5, label=new.version, color="tab:blue")
        right.set_title(f"{task}: negative scores", fontsize=9)
        right.set_xlabel("teacher score (cosine)")
        right.legend(fontsize=7)
    return png_bytes(fig)
