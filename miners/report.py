"""The mining report: counts per task, score distributions, and a plot with the threshold.

Built from what selection wrote, never recomputed: one row per mined query (its anchor
positive score and the threshold selection applied), the chosen negatives and the rejected
candidates. Written beside the negatives version as ``report.json`` and ``scores.png``,
and printed as a table.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.select import ABOVE_THRESHOLD, REASONS
from storage import format_table


@dataclass
class TaskInfo:
    """One task as the search left it, before selection."""

    task_type: str
    strategy: str  # the selection strategy its queries use
    depth: int  # teacher top-k searched per query (capped at the pool size)
    queries: int  # examples of the task
    skipped: dict[str, int]  # queries not mined, by reason (positive_not_in_pool)


@dataclass
class TaskReport:
    """One task's line of report.json (scores are summaries: n, mean, p10, p50, p90)."""

    type: str
    strategy: str
    depth: int
    queries: int
    queries_skipped: dict[str, int]
    queries_mined: int  # queries with a positive in the candidate pool
    queries_with_negatives: int
    queries_short: int  # fewer negatives than asked for (never padded)
    queries_without_negatives: int
    negatives: int
    rejected: dict[str, int]  # candidates rejected, by reason (miners.select.REASONS)
    positive_score: dict  # the anchor (lowest) positive score of each mined query
    negative_score: dict
    rejected_above_threshold_score: dict
    threshold: dict  # each mined query's threshold, where its strategy has one


def _summary(values) -> dict:
    if len(values) == 0:
        return {"n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "mean": round(float(arr.mean()), 4),
            **{f"p{q}": round(float(np.percentile(arr, q)), 4) for q in (10, 50, 90)}}


@dataclass
class TaskScores:
    """The score distributions of one task, for the report and the plot."""

    positive: np.ndarray  # per mined query
    thresholds: np.ndarray  # per mined query with a finite threshold
    negative: np.ndarray  # per chosen negative
    above: np.ndarray  # per candidate rejected above the threshold

    @classmethod
    def empty(cls) -> "TaskScores":
        return cls(*(np.zeros(0),) * 4)


def column_by_task(table: pa.Table, column: str, *, drop_null: bool) -> dict[str, np.ndarray]:
    """Task -> ``column``'s values in that task's rows, in row order, as float64. Nulls are
    dropped, or kept as NaN; tasks are those with at least one row."""
    tasks, values = table.column("task"), table.column(column).cast(pa.float64())
    out = {}
    for task in pc.unique(tasks).to_pylist():
        kept = values.filter(pc.equal(tasks, task))
        kept = kept.drop_null() if drop_null else pc.fill_null(kept, float("nan"))
        out[task] = kept.to_numpy()
    return out


def task_scores(queries: pa.Table, negatives: pa.Table, rejections: pa.Table) -> dict[str, TaskScores]:
    """``queries``: task, positive_score, threshold; ``negatives``: task, neg_score;
    ``rejections``: task, reason, cand_score. A task with rows in any of them gets an entry
    (a missing score is NaN; a missing threshold is left out). Counted by Arrow: the
    rejections are hundreds of thousands of rows on the embedded set."""
    above = rejections.filter(pc.equal(rejections.column("reason"), ABOVE_THRESHOLD))
    columns = {"positive": column_by_task(queries, "positive_score", drop_null=False),
               "thresholds": column_by_task(queries, "threshold", drop_null=True),
               "negative": column_by_task(negatives, "neg_score", drop_null=False),
               "above": column_by_task(above, "cand_score", drop_null=False)}
    tasks = dict.fromkeys(t for table in (queries, negatives, above) for t in pc.unique(table.column("task")).to_pylist())
    empty = np.zeros(0)
    return {task: TaskScores(**{k: v.get(task, empty) for k, v in columns.items()}) for task in tasks}


def build_report(tasks: dict[str, TaskInfo], queries: pa.Table, negatives: pa.Table, rejections: pa.Table,
                 scores: dict[str, TaskScores], num_negatives: int) -> dict[str, TaskReport]:
    """``queries``: one row per mined query (task, example_id); ``negatives``: example_id;
    ``rejections``: task, reason; ``scores``: ``task_scores`` of the same rows."""
    neg_count = Counter(negatives.column("example_id").to_pylist())
    rejected = defaultdict(Counter)
    counts = rejections.select(["task", "reason"]).group_by(["task", "reason"]).aggregate([([], "count_all")])
    for task, reason, n in zip(*(counts.column(c).to_pylist() for c in ("task", "reason", "count_all"))):
        rejected[task][reason] = n
    mined = defaultdict(list)
    for task, example_id in zip(queries.column("task").to_pylist(), queries.column("example_id").to_pylist()):
        mined[task].append(example_id)
    report = {}
    for task, info in tasks.items():
        counts = [neg_count.get(i, 0) for i in mined[task]]
        s = scores.get(task, TaskScores.empty())
        report[task] = TaskReport(
            type=info.task_type, strategy=info.strategy, depth=info.depth, queries=info.queries,
            queries_skipped=dict(info.skipped), queries_mined=len(counts),
            queries_with_negatives=sum(1 for c in counts if c > 0),
            queries_short=sum(1 for c in counts if c < num_negatives),
            queries_without_negatives=sum(1 for c in counts if c == 0), negatives=int(sum(counts)),
            rejected={r: rejected[task][r] for r in REASONS if rejected[task][r]},
            positive_score=_summary(s.positive), negative_score=_summary(s.negative),
            rejected_above_threshold_score=_summary(s.above), threshold=_summary(s.thresholds))
    return report


def format_report(report: dict[str, TaskReport]) -> str:
    header = ("task", "queries", "mined", "negatives", "short", "none", "pos p50", "neg p50", "rejected (by reason)")
    rows = []
    for task, r in report.items():
        rejected = ", ".join(f"{k} {v}" for k, v in r.rejected.items()) or "-"
        rows.append((task, str(r.queries), str(r.queries_mined), str(r.negatives), str(r.queries_short),
                     str(r.queries_without_negatives), str(r.positive_score.get("p50", "-")),
                     str(r.negative_score.get("p50", "-")), rejected))
    return format_table(header, rows)


def plot_scores(scores: dict[str, TaskScores], strategy: str, margin,
                marks: dict[str, dict[float, float]] | None = None) -> bytes:
    """PNG: per task, histograms of positive, chosen-negative and rejected-above-threshold scores;
    ``marks`` (task -> margin -> median threshold, from ``quarry margins``) draws where each
    listed margin would cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(scores)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 2.6 * max(1, len(tasks))), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        data = scores[task]
        bins = np.linspace(-0.2, 1.0, 61)
        # One step patch per histogram (``stairs``): ``hist`` draws a patch per bar, several times slower.
        ax.stairs(np.histogram(data.positive, bins)[0], bins, fill=True, alpha=0.55, label="positive",
                  color="tab:green")
        ax.stairs(np.histogram(data.negative, bins)[0], bins, fill=True, alpha=0.55, label="chosen negative",
                  color="tab:blue")
        if len(data.above):
            ax.stairs(np.histogram(data.above, bins)[0], bins, fill=True, alpha=0.45,
                      label="rejected: above threshold", color="tab:red")
        if len(data.thresholds) and margin is not None:
            ax.axvline(float(np.median(data.thresholds)), color="k", linestyle="--",
                       label=f"median threshold ({strategy}, margin {margin})")
        listed = sorted((marks or {}).get(task, {}).items())
        every = max(1, len(listed) // 6)  # a label on every few lines, so that they stay legible
        for i, (m, x) in enumerate(listed):
            ax.axvline(x, color="0.35", linestyle=":", linewidth=0.8,
                       label=f"median threshold at each listed margin ({strategy})" if i == 0 else None)
            if i % every == 0 or i == len(listed) - 1:
                ax.text(x, 1.0, f"{m:g}", transform=ax.get_xaxis_transform(), fontsize=6, rotation=90,
                        va="top", ha="right", color="0.25")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("teacher score (cosine)")
        ax.legend(fontsize=7)
    return png_bytes(fig)


# Margins of a figure of stacked rows of axes, in inches: fixed rather than found by
# ``tight_layout``, which draws the whole figure once more to measure it (about half a
# mine's plotting time on the embedded set).
TOP_IN, BOTTOM_IN, GAP_IN = 0.3, 0.5, 0.75


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards): what a version attaches."""
    import matplotlib.pyplot as plt

    height = fig.get_figheight()
    rows = fig.axes[0].get_gridspec().nrows if fig.axes else 1
    per_row = (height - TOP_IN - BOTTOM_IN) / rows
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - TOP_IN / height, bottom=BOTTOM_IN / height,
                        hspace=GAP_IN / (per_row - GAP_IN), wspace=0.18)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def report_dict(report: dict[str, TaskReport]) -> dict[str, dict]:
    """The report as plain JSON values (manifest stats, report.json)."""
    return {task: asdict(r) for task, r in report.items()}


def to_json(report: dict[str, TaskReport]) -> bytes:
    return (json.dumps(report_dict(report), indent=2, sort_keys=True) + "\n").encode()
