"""What ``quarry eval`` hands back: every model's scores per task, and the side-by-side table."""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.mteb_tasks import METRICS
from miners.cache import EmbedStats
from storage import format_table


@dataclass(frozen=True)
class Score:
    task: str
    task_type: str
    metric: str
    value: float


@dataclass
class ModelEval:
    model: str
    kind: str
    fingerprint: str
    scores: list[Score]
    embed: EmbedStats
    dim: int | None = None  # the Matryoshka prefix scored; None: the full vectors

    def value(self, task: str, metric: str) -> float | None:
        return next((s.value for s in self.scores if s.task == task and s.metric == metric), None)

    def to_dict(self) -> dict:
        per_task: dict[str, dict] = {}
        for s in self.scores:
            per_task.setdefault(s.task, {"task_type": s.task_type})[s.metric] = s.value
        return {"model": self.model, "kind": self.kind, "fingerprint": self.fingerprint, "tasks": per_task}


@dataclass
class EvalResult:
    examples: str
    examples_version: str
    split: str
    models: list[ModelEval]
    evals_version: str | None = None

    def main_scores(self) -> list[tuple[str, str]]:
        """(task, main metric) in task order."""
        seen: dict[str, str] = {}
        for s in self.models[0].scores:
            seen.setdefault(s.task, METRICS[s.task_type][0])
        return list(seen.items())

    def table(self) -> str:
        """Models side by side; with two or more (and no Matryoshka prefixes), the last minus the first."""
        header = ["task", "metric", *[m.model for m in self.models]]
        diff = len(self.models) > 1 and all(m.dim is None for m in self.models)
        if diff:
            header.append("diff (last - first)")
        rows = []
        for s in self.models[0].scores:
            values = [m.value(s.task, s.metric) for m in self.models]
            row = [s.task, s.metric, *[_fmt(v) for v in values]]
            if diff:
                first, last = values[0], values[-1]
                row.append("" if first is None or last is None else f"{last - first:+.4f}")
            rows.append(row)
        return format_table(header, rows)

    def summary(self) -> str:
        where = f"examples/{self.examples} {self.examples_version}, {self.split} split"
        # A Matryoshka prefix reuses its model's vectors: only the full-vector rows embedded anything.
        embedded = "; ".join(f"{m.model}: {m.embed.summary()}" for m in self.models if m.dim is None)
        tail = f"\neval: results in evals/{self.examples} {self.evals_version} (view evals)" if self.evals_version else ""
        return f"eval: {where} ({embedded})\n{self.table()}{tail}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
