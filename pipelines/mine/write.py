"""Mining, stage 3: the selection output becomes ``rejections/<name>`` and ``negatives/<name>``.

Each selected block is split once, in a Ray task, into its negatives, rejections and
per-query rows; the report is built from a few columns of those parts, and Ray tasks
write both kinds' parts at once, in block order, while the driver draws the plot and reads
the previous run back. Rejections commit first; the negatives version names them and
carries ``report.json`` and ``scores.png``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from miners.cache import EmbedStats
from miners.drift import MinedRun
from miners.report import (TaskReport, TaskScores, build_report, format_report, plot_scores, report_dict, task_scores,
                           to_json)
from pipelines.mine.config import MineConfig
from pipelines.mine.drift import DriftResult, flagged, previous_run, write_drift
from pipelines.mine.reuse import KIND as SEARCHED
from pipelines.mine.reuse import LISTS, carried_rows, version_key
from pipelines.mine.search import SearchResult
from pipelines.mine.select import NEGATIVE, QUERY, REJECTED, SelectedTexts
from pipelines.runtime.ordered_writes import block_sizes, start_ordered_writes
from storage import Catalog, InputError, Manifest
from storage.schemas import NEGATIVE_SCHEMA, REJECTION_SCHEMA, SEARCHED_SCHEMA

log = logging.getLogger("quarry")

# Mined rows repeat their texts: every rejected candidate carries its document's text, and
# every negative its query's. With Parquet's default 1 MiB dictionary page, the writer
# stops dictionary-encoding a column after its first MiB of distinct values and stores the
# rest plain. A dictionary of up to 128 MiB holds a few thousand documents' texts: the
# vital rejections (722,595 rows) take 15.8 MB instead of 143 MB, and the write takes about half
# the time (docs/benchmarks.md). Past the limit the column falls back to plain, as before.
MINED_PARQUET = {"dictionary_pagesize_limit": 128 << 20}

# What the report reads of each part.
REPORT_COLUMNS = {NEGATIVE: ["task", "example_id", "neg_id", "neg_score", "neg_judge_score"],
                  REJECTED: ["task", "reason", "cand_score", "cand_judge_score"],
                  QUERY: ["task", "example_id", "positive_score", "positive_judge_score", "threshold"]}
# With a judge, the report and its plot show the scores the rules read: the judge's.
JUDGED_SCORES = {"neg_judge_score": "neg_score", "cand_judge_score": "cand_score",
                 "positive_judge_score": "positive_score"}


@dataclass(frozen=True)
class ReuseSummary:
    """How a re-mine split the queries: searched again, or carried over unchanged."""

    previous_version: str  # the negatives version the carried queries keep their rows from
    carried_queries: int
    searched_queries: int


@dataclass
class MineResult:
    negatives: Manifest
    rejections: Manifest
    report: dict[str, TaskReport]
    embed_stats: EmbedStats
    run_id: str
    drift: DriftResult | None = None  # against the previous negatives of the same name, if there were any
    reuse: ReuseSummary | None = None  # None: every query was searched (a first mine, or --no-reuse)
    precision: str = "fp32"  # the teacher's, as resolved for its encoders
    judge_stats: EmbedStats | None = None  # a bi-encoder judge's embedding of what its cache lacked

    def summary(self) -> str:
        n, r = self.negatives, self.rejections
        judge = f"\njudge: {self.judge_stats.summary()}" if self.judge_stats else ""
        lines = [f"{self.embed_stats.summary()}; teacher at {self.precision}{judge}", format_report(self.report),
                 f"negatives/{n.name}: committed {n.version}: {n.num_rows} rows; rejections/{r.name} "
                 f"{r.version}: {r.num_rows} rows; run {self.run_id}"]
        if self.reuse:
            lines.insert(1, f"searched {self.reuse.searched_queries} queries again; {self.reuse.carried_queries} "
                            f"the change cannot reach keep their negatives from {self.reuse.previous_version}")
        return "\n".join(lines + ([self.drift.summary()] if self.drift else []))


def split_selected(block: pa.Table, kind: str) -> pa.Table:
    """The rows of one kind, in the columns of their dataset but with the texts still named
    by position (``SelectedTexts.join`` puts them in); query rows: the report's columns."""
    rows = block.filter(pc.equal(block.column("row_kind"), kind)).drop_columns(["row_kind"])
    if kind == NEGATIVE:
        return rows.drop_columns(["reason"])
    if kind == QUERY:
        return rows.select(REPORT_COLUMNS[QUERY])
    return rows.rename_columns([n.replace("neg_", "cand_") for n in rows.column_names])


def _columns(block: pa.Table, names: list[str]) -> pa.Table:
    return block.select(names)


def _judge_scores_as_scores(table: pa.Table) -> pa.Table:
    """The report's columns with the judge's scores in the place of the teacher's."""
    for judged, plain in JUDGED_SCORES.items():
        if judged in table.column_names:
            table = table.drop_columns([plain]).rename_columns(
                [plain if n == judged else n for n in table.column_names if n != plain])
    return table


def write_mined(cfg: MineConfig, catalog: Catalog, searched: SearchResult, blocks: list, run_id: str) -> MineResult:
    import ray

    split = ray.remote(split_selected)
    parts = {kind: [split.remote(b, kind) for b in blocks] for kind in (NEGATIVE, REJECTED, QUERY)}
    carried_searches = _carry_over(catalog, searched, parts)
    mined = _report(cfg, searched, parts)
    reuse = (ReuseSummary(previous_version=searched.previous.version, carried_queries=searched.carried_count,
                          searched_queries=searched.queries.num_rows) if searched.previous else None)
    negatives_m, rejections_m, previous = _commit(cfg, catalog, searched, parts, mined, carried_searches, run_id,
                                                  reuse)
    log.info("mine: %d negatives for %d queries, %d candidates rejected", negatives_m.num_rows,
             sum(r.queries_mined for r in mined.report.values()), rejections_m.num_rows)
    drift = None
    if previous is not None:
        log.info("mine: drift against negatives/%s %s", negatives_m.name, previous.version)
        now = MinedRun(version=negatives_m.version,
                       queries=mined.parts[QUERY].select(["task", "example_id", "positive_score"]),
                       negatives=mined.parts[NEGATIVE].select(["task", "example_id", "neg_id", "neg_score"]),
                       flagged=pa.concat_tables(ray.get([ray.remote(flagged).remote(p) for p in parts[REJECTED]])
                                                if parts[REJECTED] else previous.flagged.slice(0, 0)))
        drift = write_drift(catalog, previous, now, searched, negatives_m)
    return MineResult(negatives=negatives_m, rejections=rejections_m, report=mined.report,
                      embed_stats=searched.embed_stats, run_id=run_id, drift=drift, reuse=reuse,
                      precision=searched.teacher.precision, judge_stats=searched.judge_stats)


@dataclass
class _Mined:
    """The report and the columns of the selection output it was built from."""

    parts: dict[str, pa.Table]  # kind -> REPORT_COLUMNS of every block
    scores: dict[str, TaskScores]
    report: dict[str, TaskReport]


def _report(cfg: MineConfig, searched: SearchResult, parts: dict[str, list]) -> _Mined:
    import ray

    columns = ray.remote(_columns)
    # Query rows come out of the split in the report's columns already; the others are cut down.
    report_parts = {kind: pa.concat_tables(ray.get(refs if kind == QUERY else
                                                   [columns.remote(p, REPORT_COLUMNS[kind]) for p in refs]))
                    for kind, refs in parts.items()}
    if searched.judge:
        report_parts = {kind: _judge_scores_as_scores(table) for kind, table in report_parts.items()}
    scores = task_scores(report_parts[QUERY], report_parts[NEGATIVE], report_parts[REJECTED])
    report = build_report(searched.tasks, report_parts[QUERY], report_parts[NEGATIVE], report_parts[REJECTED], scores,
                          cfg.selection.num_negatives)
    if sum(r.negatives for r in report.values()) == 0:
        raise InputError("no negatives survived selection for any query: loosen --margin or raise --depth "
                         "(rejections are counted in the report)")
    return _Mined(report_parts, scores, report)


def _commit(cfg: MineConfig, catalog: Catalog, searched: SearchResult, parts: dict[str, list], mined: _Mined,
            carried_searches: pa.Table | None, run_id: str, reuse: ReuseSummary | None
            ) -> tuple[Manifest, Manifest, MinedRun | None]:
    """Write and commit rejections, searched and negatives, in that order (the negatives
    version names the other two); returns them and the previous run, read before the commit."""
    import ray

    teacher = searched.teacher
    config = {"built_by": "quarry mine", **asdict(cfg), "run_id": run_id, "teacher_fingerprint": teacher.fingerprint,
              "teacher_commit": teacher.commit, "teacher_max_length": teacher.max_length,
              "embedding_cache": searched.cache_name}
    name = cfg.output_name
    texts = SelectedTexts.of(searched).put()
    report = mined.report
    with catalog.writer("rejections", name) as rejections_w, catalog.writer("negatives", name) as negatives_w:
        # Both kinds are written by Ray tasks at once, while the driver draws the plot and
        # reads the previous run back.
        writes = {kind: start_ordered_writes(parts[kind], block_sizes(parts[kind]), writer.staging_dir,
                                             writer.filesystem, rows_per_file=1_000_000, parquet_options=MINED_PARQUET,
                                             prepare=functools.partial(texts.join, schema=schema))
                  for kind, writer, schema in ((REJECTED, rejections_w, REJECTION_SCHEMA),
                                               (NEGATIVE, negatives_w, NEGATIVE_SCHEMA))}
        try:
            png = plot_scores({t: mined.scores.get(t, TaskScores.empty()) for t in report}, cfg.selection.strategy,
                              cfg.selection.effective_margin)
            previous = previous_run(catalog, name, list(searched.plans))  # before this run's negatives commit
            ray.get(writes[REJECTED])
            rejections_m = rejections_w.commit(config=config, inputs=searched.inputs, allow_empty=True,
                                               stats={"rejected_by_task": {t: r.rejected for t, r in report.items()}})
            searched_m = catalog.write_table(SEARCHED, name,
                                             searched_table(searched, mined.parts[QUERY], carried_searches),
                                             config={"built_by": "quarry mine", "run_id": run_id})
            config[version_key(SEARCHED)] = searched_m.version
            lists_m = catalog.write_table(LISTS, name, searched.lists,
                                          config={"built_by": "quarry mine", "run_id": run_id,
                                                  "list_extra": cfg.list_extra})
            config[version_key(LISTS)] = lists_m.version
            ray.get(writes[NEGATIVE])
        except BaseException:
            # Let every write task end before leaving the block discards their staging folders.
            ray.wait(writes[REJECTED] + writes[NEGATIVE], num_returns=len(writes[REJECTED] + writes[NEGATIVE]))
            raise
        negatives_w.attach("report.json", to_json(report))
        negatives_w.attach("scores.png", png)
        negatives_m = negatives_w.commit(config={**config, version_key("rejections"): rejections_m.version},
                                         inputs=searched.inputs + [rejections_m.input_ref()],
                                         stats={"report": report_dict(report), "embedding": asdict(searched.embed_stats),
                                                "reuse": asdict(reuse) if reuse else None})
    return negatives_m, rejections_m, previous


def _carry_over(catalog: Catalog, searched: SearchResult, parts: dict[str, list]) -> pa.Table | None:
    """Add the previous rows of the queries not searched again to the parts; returns their
    previous search records (None when nothing is carried)."""
    import ray

    if not searched.carried_count:
        return None
    prev = searched.previous
    ids = [e for ids in searched.carried.values() for e in ids]
    pool_ids = {name: pool.table.column("id") for name, pool in searched.pools.items()}
    texts = searched.pool_texts()
    negatives = carried_rows(catalog, prev, "negatives", ids, pool_ids, texts).cast(NEGATIVE_SCHEMA)
    rejections = carried_rows(catalog, prev, "rejections", ids, pool_ids, texts)
    records = carried_rows(catalog, prev, SEARCHED, ids, pool_ids, texts)
    parts[NEGATIVE].append(ray.put(negatives))
    parts[REJECTED].append(ray.put(rejections.cast(REJECTION_SCHEMA)))
    # A search record keeps no judge score: a run with a judge carries nothing over (reuse).
    query_rows = records.append_column("positive_judge_score", pa.nulls(records.num_rows, pa.float64()))
    parts[QUERY].append(ray.put(query_rows.select(REPORT_COLUMNS[QUERY])))
    return records


def searched_table(searched: SearchResult, queries: pa.Table, carried: pa.Table | None) -> pa.Table:
    """``searched/<name>``: each searched query's depth and k-th score beside the positive
    score and threshold selection applied, then the carried queries' previous records."""
    kth = dict(zip(searched.queries.column("example_id").to_pylist(), searched.queries.column("kth_score").to_pylist()))
    fresh = queries.filter(pc.is_in(queries.column("example_id"), pa.array(list(kth), pa.string())))
    ids = fresh.column("example_id").to_pylist()
    table = pa.table({"task": fresh.column("task"), "example_id": fresh.column("example_id"),
                      "depth": pa.array([searched.tasks[t].depth for t in fresh.column("task").to_pylist()], pa.int32()),
                      "kth_score": pa.array([kth[e] for e in ids], pa.float32()),
                      "positive_score": fresh.column("positive_score").cast(pa.float64()),
                      "threshold": fresh.column("threshold").cast(pa.float64())}, schema=SEARCHED_SCHEMA)
    return pa.concat_tables([table, carried.select(SEARCHED_SCHEMA.names).cast(SEARCHED_SCHEMA)]) if carried else table
