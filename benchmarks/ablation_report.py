"""Tables of the negatives ablation (benchmarks/negatives_ablation.py report): each arm's mean
± sample std over seeds, and paired differences between arms with 95% confidence
intervals (Student's t over the seeds both arms ran)."""

from __future__ import annotations

import statistics
from collections import defaultdict


def t_interval(diffs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% confidence interval of the mean of ``diffs``."""
    from scipy import stats

    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f} (1)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} ({len(values)})"


def report(rows: list[dict], split: str, pairs: list[str], arms: dict) -> str:
    scores = [r for r in rows if r["part"] == "score" and r["split"] == split]
    baselines = [r for r in rows if r["part"] == "baseline" and r["split"] == split]
    if not scores:
        return f"no scored runs on the {split} split yet"
    tasks = sorted({t for r in scores for t in r["scores"]})
    by = defaultdict(dict)  # (teacher, hp, arm) -> seed -> scores
    for r in scores:
        by[(r["teacher"], r["hp"], r["arm"])][r["seed"]] = r["scores"]
    out = []
    for hp in sorted({r["hp"] for r in scores}):
        out += [f"### {split} split, {hp}", "", "| teacher | negatives | " + " | ".join(tasks) + " |",
                "|---|---|" + "---|" * len(tasks)]
        for b in baselines:
            out.append(f"| {b['model']} | (the model itself) | " + " | ".join(
                f"{b['scores'][t]:.4f}" for t in tasks) + " |")
        for (teacher, h, arm), per_seed in sorted(by.items()):
            if h != hp:
                continue
            out.append(f"| {teacher} | {arms[arm].label} | " + " | ".join(
                _cell([s[t] for s in per_seed.values()]) for t in tasks) + " |")
        out += ["", "Paired differences (same seed), mean [95% CI] (seeds):", "",
                "| teacher | difference | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
        for teacher in sorted({k[0] for k in by if k[0] != "none"}):
            for pair in pairs:
                left, right = pair.split("-")
                a = by.get((teacher if left != "a" else "none", hp, left), {})
                b = by.get((teacher if right != "a" else "none", hp, right), {})
                seeds = sorted(set(a) & set(b))
                if not seeds:
                    continue
                cells = []
                for t in tasks:
                    mean, low, high = t_interval([a[s][t] - b[s][t] for s in seeds])
                    cells.append(f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] ({len(seeds)})")
                out.append(f"| {teacher} | {left} − {right} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
