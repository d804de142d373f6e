"""The main job's verdict and its ``report.md``: what the data was worth.

``verdict`` compares the trained model with its teacher on the main score of every task;
``write_run_report`` writes ``<root>/runs/<run>/report.md`` with three PNGs beside it: the
mining score distributions (copied from the negatives version), the training loss curve
(from ``metrics.jsonl``) and the evaluation as a bar chart.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from dataclasses import dataclass

from pipelines.evaluate.results import EvalResult, ModelEval
from storage import Catalog
from trainers.run_files import METRICS_FILE


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    metric: str
    teacher: float
    trained: float

    @property
    def delta(self) -> float:
        return self.trained - self.teacher


@dataclass(frozen=True)
class Verdict:
    teacher: str
    trained: str
    split: str
    tasks: tuple[TaskVerdict, ...]
    trained_tasks: tuple[str, ...]  # the tasks the model was trained on (its shards' tasks)

    def beaten(self, tasks: tuple[TaskVerdict, ...]) -> int:
        return sum(t.delta > 0 for t in tasks)

    def text(self) -> str:
        trained = tuple(t for t in self.tasks if t.task in self.trained_tasks) or self.tasks
        mean = sum(t.delta for t in trained) / len(trained)
        lines = [f"verdict ({self.split} split): on the {len(trained)} task(s) it was trained on, the trained model "
                 f"{_beat(self.beaten(trained), len(trained))} (mean main-score change {mean:+.4f}); over all "
                 f"{len(self.tasks)} task(s), it {_beat(self.beaten(self.tasks), len(self.tasks))}."]
        lines += [f"  {t.task}: {t.metric} {t.trained:.4f} vs teacher {t.teacher:.4f} ({t.delta:+.4f})"
                  for t in self.tasks]
        return "\n".join(lines)


def _beat(won: int, of: int) -> str:
    if won == of:
        return "BEAT the teacher" + ("" if of == 1 else " on every one")
    if won == 0:
        return "did NOT beat the teacher"
    return f"beat the teacher on {won} of {of}"


def verdict(result: EvalResult, teacher: ModelEval, trained: ModelEval, trained_tasks: list[str]) -> Verdict:
    rows = []
    for task, metric in result.main_scores():
        a, b = teacher.value(task, metric), trained.value(task, metric)
        if a is not None and b is not None:
            rows.append(TaskVerdict(task, metric, a, b))
    return Verdict(teacher.model, trained.model, result.split, tuple(rows), tuple(trained_tasks))


# Steps of the moving average drawn over each task's losses.
LOSS_WINDOW = 5


def losses_by_task(metrics_jsonl: str) -> dict[str, list[tuple[int, float]]]:
    """Task -> (step, loss) in step order, from ``metrics.jsonl`` (a resumed run repeats
    steps after its checkpoint: the last row of a step wins)."""
    steps: dict[int, tuple[str, float]] = {}
    for line in metrics_jsonl.splitlines():
        if line.strip():
            row = json.loads(line)
            steps[int(row["step"])] = (str(row.get("task") or "loss"), float(row["loss"]))
    out: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(steps):
        task, loss = steps[step]
        out.setdefault(task, []).append((step, loss))
    return out


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of each value and up to ``window - 1`` before it."""
    return [sum(values[max(0, i - window + 1):i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(values))]


def loss_curve_png(metrics_jsonl: str | None) -> bytes | None:
    """One line per task, and its moving average: a run that alternates an easy task and a
    hard one draws two levels, not a saw-tooth that reads as divergence."""
    by_task = losses_by_task(metrics_jsonl) if metrics_jsonl else {}
    if not by_task:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for task, points in sorted(by_task.items()):
        xs, ys = [s for s, _ in points], [v for _, v in points]
        line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=0.8, alpha=0.45, label=task)
        ax.plot(xs, moving_average(ys, LOSS_WINDOW), color=line.get_color(), linewidth=2,
                label=f"{task} ({LOSS_WINDOW}-step mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss per task")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def eval_bars_png(v: Verdict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = range(len(v.tasks))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [t.teacher for t in v.tasks], width, label=f"teacher ({v.teacher})")
    ax.bar([x + width / 2 for x in xs], [t.trained for t in v.tasks], width, label=f"trained ({v.trained})")
    ax.set_xticks(list(xs), [f"{t.task}\n{t.metric}" for t in v.tasks], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title(f"{v.split} split, main score per task")
    ax.legend(fontsize=7)
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_run_report(catalog: Catalog, run_dir: str, v: Verdict, result: EvalResult, negatives: tuple[str, str],
                     summaries: list[str]) -> str:
    """``report.md`` in the run folder (on the data root), with its PNGs; returns where, as a
    user names it."""
    root = catalog.root
    metrics = posixpath.join(run_dir, METRICS_FILE)
    images: dict[str, bytes | None] = {
        "eval.png": eval_bars_png(v),
        "loss.png": loss_curve_png(root.read_bytes(metrics).decode("utf-8") if root.exists(metrics) else None)}
    scores_png = root.path("negatives", negatives[0], negatives[1], "scores.png")
    if root.exists(scores_png):
        images["mining-scores.png"] = root.read_bytes(scores_png)
    if root.is_local:
        os.makedirs(run_dir, exist_ok=True)
    for name, data in images.items():
        if data:
            root.write_bytes_atomic(posixpath.join(run_dir, name), data)
    lines = [f"# Quarry run report: {v.trained}", "", "## Verdict", "", "```", v.text(), "```", "",
             "## Evaluation", "", f"examples/{result.examples} {result.examples_version}, {result.split} split; "
             "metrics from mteb's evaluators.", "", "```", result.table(), "```", "", "![evaluation](eval.png)", ""]
    if images.get("loss.png"):
        lines += ["## Training", "", "![training loss](loss.png)", ""]
    if "mining-scores.png" in images:
        lines += ["## Mining", "", f"negatives/{negatives[0]} {negatives[1]}: teacher scores of positives, chosen "
                  "negatives and rejected candidates.", "", "![mining scores](mining-scores.png)", ""]
    lines += ["## Stages", "", "```", *summaries, "```", ""]
    path = posixpath.join(run_dir, "report.md")
    root.write_bytes_atomic(path, "\n".join(lines).encode("utf-8"))
    return root.display(path)


__all__ = ["Verdict", "TaskVerdict", "verdict", "write_run_report"]
