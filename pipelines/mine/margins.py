"""``quarry margins``: the margin listing (miners/margins.py) over a mine's stored rows.

Reads ``negatives/<name>`` and the ``rejections`` version written with it, no encoding and
no Ray; prints, per task, how many of the naive top-k candidates each margin rejects and a
sample of the pairs each cut decides, and can draw the mining report's score plot with the
median threshold of each listed margin marked. Tested by tests/pipelines/mine/test_mine_ray.py
(against a plain top-k mine) and tests/pipelines/mine/test_judge_ray.py (a judged run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.margins import Candidates, Cut, margin_table, naive_top_k
from miners.select import ABOVE_THRESHOLD, DEFAULT_MARGIN, SelectionConfig
from pipelines.mine.reuse import companion_version
from storage import Catalog, ConfigError, InputError
from storage.names import DEFAULT_DATASET
from storage.render import format_table

THRESHOLD_STRATEGIES = tuple(s for s, m in DEFAULT_MARGIN.items() if m is not None)


@dataclass
class MarginsConfig:
    negatives: str = DEFAULT_DATASET
    version: str | None = None  # default: the latest
    tasks: tuple[str, ...] = ()  # default: every task of the run
    strategy: str = "topk_perc_pos"
    start: float = 0.85
    stop: float = 1.0
    step: float = 0.01
    num_negatives: int | None = None  # k of the naive top-k; default: the run's own
    samples: int = 2
    plot: str | None = None  # a PNG path: the score plot with each margin's median threshold

    def __post_init__(self) -> None:
        if self.strategy not in THRESHOLD_STRATEGIES:
            raise ConfigError("strategy", f"must be a strategy with a margin ({', '.join(THRESHOLD_STRATEGIES)}), "
                                          f"got {self.strategy!r}")
        if not self.step > 0:
            raise ConfigError("step", f"must be positive, got {self.step}")
        if self.stop < self.start:
            raise ConfigError("stop", f"must be at least the first margin ({self.start}), got {self.stop}")
        if (self.stop - self.start) / self.step > 200:
            raise ConfigError("step", f"lists {int((self.stop - self.start) / self.step) + 1} margins; 200 at most")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ConfigError("num_negatives", f"must be at least 1, got {self.num_negatives}")
        if self.samples < 0:
            raise ConfigError("samples", f"must be 0 or more, got {self.samples}")
        for name in ("start", "stop"):
            try:
                SelectionConfig(strategy=self.strategy, margin=getattr(self, name))
            except ConfigError as e:
                raise ConfigError(name, f"must be a margin {self.strategy} takes ({e})") from None

    @property
    def margins(self) -> list[float]:
        n = int(round((self.stop - self.start) / self.step)) + 1
        return [round(self.start + i * self.step, 6) for i in range(n)]


@dataclass
class MarginListing:
    name: str
    version: str
    k: int
    cuts: dict[str, list[Cut]]  # task -> one cut per margin
    candidates: dict[str, int]  # task -> naive top-k candidates read
    thresholds: dict[str, dict[float, float]] = field(default_factory=dict)  # task -> margin -> median threshold
    judge: str | None = None  # the scores listed are this judge's

    def summary(self) -> str:
        scale = f", on the scores of the judge {self.judge}" if self.judge else ""
        out = [f"negatives/{self.name} {self.version}: of each query's naive top-{self.k} candidates (the chosen "
               f"negatives and those rejected above the threshold, in rank order), each margin would reject{scale}:"]
        for task, cuts in self.cuts.items():
            n = self.candidates[task]
            rows = [[f"{c.margin:g}", f"{c.rejected}", f"{100 * c.rejected / max(n, 1):.1f}%", f"{c.queries_touched}"]
                    for c in cuts]
            out += ["", f"{task} ({n} candidates)",
                    format_table(["margin", "rejected", "of candidates", "queries losing one"], rows)]
            sampled = [(c.margin, s) for c in cuts for s in c.samples]
            if sampled:
                out.append("pairs each margin rejects and the next keeps (score / positive score: query -> candidate):")
                out += [f"  {m:g}: {ratio:.3f}  {label}" for m, (ratio, label) in sampled]
        return "\n".join(out)


def _rows(catalog: Catalog, kind: str, name: str, version: str, prefix: str, only_above: bool,
          judged: bool) -> pa.Table:
    """A run's candidates with the scores its rules read: the judge's, where it had one."""
    score = "_judge_score" if judged else "_score"
    columns = ["task", "example_id", "query", f"positive{score}", f"{prefix}{score}", f"{prefix}_rank",
               f"{prefix}_text"]
    table = catalog.read_table(kind, name, version, columns=columns + (["reason"] if only_above else []))
    if only_above:
        table = table.filter(pc.equal(table.column("reason"), ABOVE_THRESHOLD)).drop_columns(["reason"])
    return table.rename_columns(["task", "example_id", "query", "positive_score", "score", "rank", "text"])


def _candidates(rows: pa.Table, k: int) -> Candidates:
    query = pc.dictionary_encode(rows.column("example_id")).combine_chunks().indices.to_numpy().astype(np.int64)
    top = naive_top_k(query, rows.column("rank").to_numpy().astype(np.int64), k)
    queries, texts = rows.column("query").to_pylist(), rows.column("text").to_pylist()
    positive = rows.column("positive_score").to_numpy(zero_copy_only=False).astype(np.float64)
    return Candidates(query=query[top], score=rows.column("score").to_numpy().astype(np.float64)[top],
                      positive_score=positive[top],
                      label=[f"{_short(queries[i], 60)} -> {_short(texts[i], 90)}" for i in top])


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def list_margins(cfg: MarginsConfig, catalog: Catalog) -> MarginListing:
    m = catalog.manifest("negatives", cfg.negatives, cfg.version)
    rejections = companion_version(m, "rejections")
    if rejections is None:
        raise InputError(f"negatives/{cfg.negatives} {m.version} names no rejections version: mine it again")
    k = cfg.num_negatives or int(m.config["selection"]["num_negatives"])
    judged = bool(m.config.get("judge"))
    rows = pa.concat_tables([_rows(catalog, "negatives", cfg.negatives, m.version, "neg", False, judged),
                             _rows(catalog, "rejections", cfg.negatives, rejections, "cand", True, judged)])
    tasks = list(cfg.tasks) or sorted(set(rows.column("task").to_pylist()))
    unknown = sorted(set(tasks) - set(rows.column("task").to_pylist()))
    if unknown:
        raise InputError(f"--tasks: negatives/{cfg.negatives} {m.version} has no task {', '.join(unknown)}")
    listing = MarginListing(cfg.negatives, m.version, k, {}, {}, judge=m.config["judge"]["model"] if judged else None)
    for task in tasks:
        cands = _candidates(rows.filter(pc.equal(rows.column("task"), task)), k)
        listing.cuts[task] = margin_table(cands, cfg.margins, cfg.strategy, cfg.samples)
        listing.candidates[task] = len(cands.score)
        positives = np.unique(np.stack([cands.query, cands.positive_score]), axis=1)[1]
        listing.thresholds[task] = {
            mg: float(np.median(SelectionConfig(strategy=cfg.strategy, margin=mg).thresholds(positives)))
            for mg in cfg.margins}
    if cfg.plot:
        _plot(catalog, m, rejections, listing, cfg)
    return listing


def _plot(catalog: Catalog, negatives, rejections: str, listing: MarginListing, cfg: MarginsConfig) -> None:
    """The mining report's score plot, each listed margin's median threshold marked."""
    from miners.report import TaskScores, plot_scores, task_scores

    score = "_judge_score" if listing.judge else "_score"  # the scale the rules read
    queries = catalog.read_table("negatives", negatives.name, negatives.version,
                                 columns=["task", "example_id", f"positive{score}", "threshold"])
    queries = queries.group_by(["task", "example_id"]).aggregate([(f"positive{score}", "min"), ("threshold", "min")])
    queries = queries.rename_columns(["task", "example_id", "positive_score", "threshold"])
    chosen = catalog.read_table("negatives", negatives.name, negatives.version, columns=["task", f"neg{score}"])
    chosen = chosen.rename_columns(["task", "neg_score"])
    rejected = catalog.read_table("rejections", negatives.name, rejections, columns=["task", f"cand{score}", "reason"])
    rejected = rejected.rename_columns(["task", "cand_score", "reason"])
    scores = task_scores(queries, chosen, rejected)
    marks = {task: listing.thresholds[task] for task in listing.cuts}
    png = plot_scores({t: scores.get(t, TaskScores.empty()) for t in listing.cuts}, cfg.strategy, None, marks)
    with open(cfg.plot, "wb") as f:
        f.write(png)
