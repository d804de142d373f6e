"""The mining report: counts per task, score distributions, and a plot with the threshold.

Built from the selection output (one row per chosen or rejected candidate) and the
per-query facts; written beside the negatives version as ``report.json`` and
``scores.png``, and printed as a table.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict

import numpy as np

from miners.select import REASONS


def _summary(values) -> dict:
    if len(values) == 0:
        return {"n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"n": int(arr.size), "mean": round(float(arr.mean()), 4),
            **{f"p{q}": round(float(np.percentile(arr, q)), 4) for q in (10, 50, 90)}}


def build_report(per_task_queries: dict[str, dict], negatives, rejections, num_negatives: int,
                 threshold_by_query: dict[str, float]) -> dict:
    """``per_task_queries``: task -> {type, queries, skipped (reason -> n), positive_scores (by example)}."""
    neg_count = Counter(negatives.column("example_id").to_pylist())
    neg_scores = defaultdict(list)
    for task, score in zip(negatives.column("task").to_pylist(), negatives.column("neg_score").to_pylist()):
        neg_scores[task].append(score)
    rejected = defaultdict(Counter)
    above = defaultdict(list)
    for task, reason, score in zip(rejections.column("task").to_pylist(), rejections.column("reason").to_pylist(),
                                   rejections.column("cand_score").to_pylist()):
        rejected[task][reason] += 1
        if reason == "above_threshold":
            above[task].append(score)
    report = {}
    for task, info in per_task_queries.items():
        ids = list(info["positive_scores"])
        counts = [neg_count.get(i, 0) for i in ids]
        thresholds = [threshold_by_query[i] for i in ids if np.isfinite(threshold_by_query.get(i, np.inf))]
        report[task] = {
            "type": info["type"],
            "queries": info["queries"],
            "queries_skipped": dict(info["skipped"]),
            "queries_mined": len(ids),
            "queries_with_negatives": sum(1 for c in counts if c > 0),
            "queries_short": sum(1 for c in counts if c < num_negatives),
            "queries_without_negatives": sum(1 for c in counts if c == 0),
            "negatives": int(sum(counts)),
            "rejected": {r: rejected[task][r] for r in REASONS if rejected[task][r]},
            "positive_score": _summary(list(info["positive_scores"].values())),
            "negative_score": _summary(neg_scores[task]),
            "rejected_above_threshold_score": _summary(above[task]),
            "threshold": _summary(thresholds),
        }
    return report


def format_table(report: dict) -> str:
    header = ("task", "queries", "mined", "negatives", "short", "none", "pos p50", "neg p50", "rejected (by reason)")
    rows = []
    for task, r in report.items():
        rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "-"
        rows.append((task, str(r["queries"]), str(r["queries_mined"]), str(r["negatives"]), str(r["queries_short"]),
                     str(r["queries_without_negatives"]), str(r["positive_score"].get("p50", "-")),
                     str(r["negative_score"].get("p50", "-")), rejected))
    widths = [max(len(x[i]) for x in rows + [header]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows)


def plot_scores(report_inputs: dict, strategy: str, margin) -> bytes:
    """PNG: per task, histograms of positive, chosen-negative and rejected-above-threshold scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report_inputs)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 2.6 * max(1, len(tasks))), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        data = report_inputs[task]
        bins = np.linspace(-0.2, 1.0, 61)
        ax.hist(data["positive"], bins=bins, alpha=0.55, label="positive", color="tab:green")
        ax.hist(data["negative"], bins=bins, alpha=0.55, label="chosen negative", color="tab:blue")
        if len(data["above"]):
            ax.hist(data["above"], bins=bins, alpha=0.45, label="rejected: above threshold", color="tab:red")
        if len(data["thresholds"]):
            ax.axvline(float(np.median(data["thresholds"])), color="k", linestyle="--",
                       label=f"median threshold ({strategy}, margin {margin})")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("teacher score (cosine)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def to_json(report: dict) -> bytes:
    return (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
