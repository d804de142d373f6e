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

Every count is taken with Arrow joins and group-bys, not Python loops over rows: a re-mine
pays for the report on every query, carried or searched (tens of thousands of queries and
hundreds of thousands of negatives on the embedded set). ``tests/miners/test_drift.py``
holds a row-by-row reference and checks the two agree on random runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.report import column_by_task, png_bytes
from miners.select import ABOVE_THRESHOLD, DUPLICATE_OF_POSITIVE, OTHER_QUERY_POSITIVE
from storage import format_table
from storage.schemas import DRIFT_SCHEMA

SAME, CHANGED, ADDED, REMOVED = "same", "changed", "added", "removed"
CHANGES = (SAME, CHANGED, ADDED, REMOVED)
# Rejection reasons that mark a candidate as a (likely) false negative.
FALSE_NEGATIVE_REASONS = (DUPLICATE_OF_POSITIVE, OTHER_QUERY_POSITIVE, ABOVE_THRESHOLD)
QUANTILES = (0.1, 0.5, 0.9)
QUERY_KEY = ["task", "example_id"]



@dataclass
class MinedRun:
    """What drift needs of one mining run.

    ``queries``: task, example_id, positive_score (one row per mined query);
    ``negatives``: task, example_id, neg_id, neg_score (and ``neg_text`` for the previous
    run, to tell a negative whose document changed from one that was deleted); ``flagged``:
    task, example_id, cand_id of candidates rejected for a reason in ``FALSE_NEGATIVE_REASONS``.
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


def _key(table: pa.Table, columns: list[str]) -> pa.ChunkedArray:
    """One string per row naming ``columns``' values (ids hold no control characters)."""
    return pc.binary_join_element_wise(*(table.column(c) for c in columns), "\x1f")


def _set_sizes(pairs: pa.Table, name: str) -> pa.Table:
    """task, example_id, ``name``: the number of distinct ids per query in ``pairs``."""
    return pairs.group_by(QUERY_KEY, use_threads=False).aggregate([([], "count_all")]) \
        .rename_columns([*QUERY_KEY, name])


def _distinct_negatives(run: MinedRun) -> pa.Table:
    return run.negatives.select([*QUERY_KEY, "neg_id"]).group_by([*QUERY_KEY, "neg_id"], use_threads=False) \
        .aggregate([])


def query_drift(previous: MinedRun, new: MinedRun) -> pa.Table:
    """One row per query mined in either run (``DRIFT_SCHEMA``), new queries' order first,
    then the removed ones in the previous run's order."""
    before, now = _distinct_negatives(previous), _distinct_negatives(new)
    shared = before.join(now, keys=[*QUERY_KEY, "neg_id"], join_type="inner", use_threads=False)
    counts = (_set_sizes(before, "n_prev"), _set_sizes(now, "n_new"), _set_sizes(shared, "n_shared"))

    def with_counts(queries: pa.Table) -> pa.Table:
        """``queries``' keys in their order, with the three set sizes (0 where a query has none)."""
        out = queries.select(QUERY_KEY).append_column("row", pa.array(np.arange(queries.num_rows)))
        for table in counts:
            out = out.join(table, keys=QUERY_KEY, join_type="left outer", use_threads=False)
        out = out.sort_by("row")
        for name in ("n_prev", "n_new", "n_shared"):
            out = out.set_column(out.schema.get_field_index(name), name, pc.fill_null(out[name], 0))
        return out

    was_mined = pc.is_in(_key(new.queries, QUERY_KEY), _key(previous.queries, QUERY_KEY))
    kept = with_counts(new.queries)
    n_prev, n_new, n_shared = (kept[c].to_numpy().astype(np.int64) for c in ("n_prev", "n_new", "n_shared"))
    was = was_mined.to_numpy(zero_copy_only=False)
    union = n_prev + n_new - n_shared
    jaccard = np.divide(n_shared, union, out=np.ones(len(union)), where=union > 0)
    identical = (n_shared == n_prev) & (n_shared == n_new)
    change = np.where(~was, ADDED, np.where(identical, SAME, CHANGED))
    rows = [pa.table({
        "task": kept["task"], "example_id": kept["example_id"], "change": pa.array(change, pa.string()),
        "jaccard": pa.array(jaccard, pa.float64(), mask=~was),
        "previous_negatives": pa.array(n_prev, pa.int32(), mask=~was), "negatives": pa.array(n_new, pa.int32()),
    })]
    gone = previous.queries.filter(pc.invert(pc.is_in(_key(previous.queries, QUERY_KEY),
                                                      _key(new.queries, QUERY_KEY))))
    removed = with_counts(gone)
    rows.append(pa.table({
        "task": removed["task"], "example_id": removed["example_id"],
        "change": pa.array([REMOVED] * removed.num_rows, pa.string()),
        "jaccard": pa.nulls(removed.num_rows, pa.float64()),
        "previous_negatives": removed["n_prev"].cast(pa.int32()), "negatives": pa.nulls(removed.num_rows, pa.int32()),
    }))
    head = pa.schema(list(DRIFT_SCHEMA)[:6])
    out = pa.concat_tables([t.cast(head) for t in rows])
    n = out.num_rows
    return out.append_column("previous_version", pa.array([previous.version] * n, pa.string())) \
        .append_column("version", pa.array([new.version] * n, pa.string())).cast(DRIFT_SCHEMA)


def _quantiles(values: np.ndarray) -> list[float | None]:
    if not len(values):
        return [None] * len(QUANTILES)
    return [round(float(q), 4) for q in np.quantile(values, QUANTILES)]


def _by_task(table: pa.Table, column: str) -> dict[str, np.ndarray]:
    """Task -> the non-null values of ``column`` in its rows, in row order (tasks with none
    left out)."""
    return {t: v for t, v in column_by_task(table, column, drop_null=True).items() if len(v)}


def task_drift(previous: MinedRun, new: MinedRun, rows: pa.Table,
               pools: Mapping[str, pa.Table]) -> dict[str, TaskDrift]:
    """Per task summary of ``rows`` (``query_drift``'s). ``pools``: task -> the candidate
    pool (id, text) the new run searched; a previous negative's id missing there was
    deleted, and one whose text differs from its ``neg_text`` was changed."""
    out: dict[str, TaskDrift] = {}

    def of(task: str) -> TaskDrift:
        return out.setdefault(task, TaskDrift())

    counts = rows.group_by(["task", "change"], use_threads=False).aggregate([([], "count_all")])
    for task, change, n in zip(*(counts.column(c).to_pylist() for c in ("task", "change", "count_all"))):
        setattr(of(task), change, n)
    changed = rows.filter(pc.equal(rows.column("change"), CHANGED))
    for task, values in _by_task(changed, "jaccard").items():
        of(task).mean_jaccard_changed = round(float(np.mean(values)), 4)
    for label, run in (("before", previous), ("after", new)):
        for task, scores in _by_task(run.queries, "positive_score").items():
            of(task).positive_quantiles[label] = _quantiles(scores)
        for task, scores in _by_task(run.negatives, "neg_score").items():
            of(task).negative_quantiles[label] = _quantiles(scores)

    in_both = _key(rows.filter(pc.is_in(rows.column("change"), pa.array([SAME, CHANGED]))), QUERY_KEY)
    flagged_now = new.flagged.filter(pc.is_in(_key(new.flagged, QUERY_KEY), in_both))
    fresh = flagged_now.filter(pc.invert(pc.is_in(_key(flagged_now, [*QUERY_KEY, "cand_id"]),
                                                  _key(previous.flagged, [*QUERY_KEY, "cand_id"]))))
    counted = pc.value_counts(fresh.column("task"))
    for task, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
        of(task).new_false_negatives = n

    # Previous negatives of queries mined both times that the new set lacks, and why.
    earlier = previous.negatives.filter(pc.is_in(_key(previous.negatives, QUERY_KEY), in_both))
    lost = earlier.filter(pc.invert(pc.is_in(_key(earlier, [*QUERY_KEY, "neg_id"]),
                                             _key(new.negatives, [*QUERY_KEY, "neg_id"]))))
    for task in pc.unique(lost.column("task")).to_pylist():
        mine = lost.filter(pc.equal(lost.column("task"), task)).select(["neg_id", "neg_text"])
        pool = pools.get(task)
        if pool is None:
            of(task).lost_to_deleted += mine.num_rows
            continue
        now = mine.join(pool.select(["id", "text"]), keys="neg_id", right_keys="id", join_type="left outer",
                        use_threads=False)
        deleted = pc.is_null(now.column("text"))
        edited = pc.and_kleene(pc.invert(deleted), pc.not_equal(now.column("text"), now.column("neg_text")))
        of(task).lost_to_deleted += pc.sum(deleted).as_py() or 0
        of(task).lost_to_changed += pc.sum(edited).as_py() or 0
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
    scores before and after. Histograms are counted with numpy and drawn as one step patch
    each (``stairs``): matplotlib's ``hist`` draws a patch per bar, several times slower."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(set(rows.column("task").to_pylist()))
    fig, axes = plt.subplots(max(1, len(tasks)), 2, figsize=(10, 2.6 * max(1, len(tasks))), squeeze=False)
    jaccards = _by_task(rows, "jaccard")
    before, after = _by_task(previous.negatives, "neg_score"), _by_task(new.negatives, "neg_score")
    empty = np.zeros(0)
    for (left, right), task in zip(axes, tasks):
        edges = np.linspace(0, 1, 21)
        left.stairs(np.histogram(jaccards.get(task, empty), edges)[0], edges, fill=True, color="tab:purple")
        left.set_title(f"{task}: Jaccard of the negative sets", fontsize=9)
        left.set_xlabel(f"Jaccard ({previous.version} vs {new.version})")
        edges = np.linspace(-0.2, 1.0, 61)
        for scores, label, color in ((before, previous.version, "tab:gray"), (after, new.version, "tab:blue")):
            right.stairs(np.histogram(scores.get(task, empty), edges)[0], edges, fill=True, alpha=0.5, label=label,
                         color=color)
        right.set_title(f"{task}: negative scores", fontsize=9)
        right.set_xlabel("teacher score (cosine)")
        right.legend(fontsize=7)
    return png_bytes(fig)
