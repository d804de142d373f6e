"""Mining, stage 3: the selection output becomes ``rejections/<name>`` and ``negatives/<name>``.

Each selected block is split once, in a Ray task, into its negatives, rejections and
per-query rows; the report is built from a few columns of those parts, and the writers
write the parts in block order. Rejections commit first; the negatives version names them
and carries ``report.json`` and ``scores.png``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from miners.cache import EmbedStats
from miners.report import (TaskReport, TaskScores, build_report, format_report, plot_scores, report_dict, task_scores,
                           to_json)
from miners.drift import MinedRun
from pipelines.mine_config import MineConfig
from pipelines.mine_drift import DriftResult, flagged, previous_run, write_drift
from pipelines.mine_search import SearchResult
from pipelines.mine_select import NEGATIVE, NEGATIVE_SCHEMA, QUERY, REJECTED, REJECTION_SCHEMA
from pipelines.ray_io import block_sizes, write_blocks_ordered
from storage import Catalog, InputError, Manifest

log = logging.getLogger("quarry")

# What the report reads of each part.
REPORT_COLUMNS = {NEGATIVE: ["task", "example_id", "neg_id", "neg_score"], REJECTED: ["task", "reason", "cand_score"],
                  QUERY: ["task", "example_id", "positive_score", "threshold"]}


@dataclass
class MineResult:
    negatives: Manifest
    rejections: Manifest
    report: dict[str, TaskReport]
    embed_stats: EmbedStats
    run_id: str
    drift: DriftResult | None = None  # against the previous negatives of the same name, if there were any

    def summary(self) -> str:
        n, r = self.negatives, self.rejections
        lines = [self.embed_stats.summary(), format_report(self.report),
                 f"negatives/{n.name}: committed {n.version}: {n.num_rows} rows; rejections/{r.name} "
                 f"{r.version}: {r.num_rows} rows; run {self.run_id}"]
        return "\n".join(lines + ([self.drift.summary()] if self.drift else []))


def split_selected(block: pa.Table, kind: str) -> pa.Table:
    """The rows of one kind, in the columns of their dataset (queries: the report's columns)."""
    rows = block.filter(pc.equal(block.column("row_kind"), kind)).drop_columns(["row_kind"])
    if kind == NEGATIVE:
        return rows.drop_columns(["reason"]).cast(NEGATIVE_SCHEMA)
    if kind == QUERY:
        return rows.select(REPORT_COLUMNS[QUERY])
    rows = rows.rename_columns([n.replace("neg_", "cand_") for n in rows.column_names])
    return rows.select(REJECTION_SCHEMA.names).cast(REJECTION_SCHEMA)


def _columns(block: pa.Table, names: list[str]) -> pa.Table:
    return block.select(names)


def write_mined(cfg: MineConfig, catalog: Catalog, searched: SearchResult, blocks: list, run_id: str) -> MineResult:
    import ray

    split, columns = ray.remote(split_selected), ray.remote(_columns)
    parts = {kind: [split.remote(b, kind) for b in blocks] for kind in (NEGATIVE, REJECTED, QUERY)}
    # Query rows come out of the split in the report's columns already; the others are cut down.
    report_parts = {kind: pa.concat_tables(ray.get(refs if kind == QUERY else
                                                   [columns.remote(p, REPORT_COLUMNS[kind]) for p in refs]))
                    for kind, refs in parts.items()}
    scores = task_scores(report_parts[QUERY], report_parts[NEGATIVE], report_parts[REJECTED])
    report = build_report(searched.tasks, report_parts[QUERY], report_parts[NEGATIVE], report_parts[REJECTED], scores,
                          cfg.selection.num_negatives)
    if sum(r.negatives for r in report.values()) == 0:
        raise InputError("no negatives survived selection for any query: loosen --margin or raise --depth "
                         "(rejections are counted in the report)")
    teacher = searched.teacher
    config = {"built_by": "quarry mine", **asdict(cfg), "run_id": run_id, "teacher_fingerprint": teacher.fingerprint,
              "teacher_commit": teacher.commit, "teacher_max_length": teacher.max_length,
              "embedding_cache": searched.cache_name}
    name = cfg.output_name
    previous = previous_run(catalog, name, list(searched.plans))
    with catalog.writer("rejections", name) as writer:
        write_blocks_ordered(parts[REJECTED], block_sizes(parts[REJECTED]), writer.staging_dir, writer.filesystem,
                             rows_per_file=1_000_000, schema=REJECTION_SCHEMA)
        rejections_m = writer.commit(config=config, inputs=searched.inputs, allow_empty=True,
                                     stats={"rejected_by_task": {t: r.rejected for t, r in report.items()}})
    with catalog.writer("negatives", name) as writer:
        write_blocks_ordered(parts[NEGATIVE], block_sizes(parts[NEGATIVE]), writer.staging_dir, writer.filesystem,
                             rows_per_file=1_000_000, schema=NEGATIVE_SCHEMA)
        writer.attach("report.json", to_json(report))
        writer.attach("scores.png", plot_scores({t: scores.get(t, TaskScores.empty()) for t in report},
                                                cfg.selection.strategy, cfg.selection.effective_margin))
        negatives_m = writer.commit(config={**config, "rejections_version": rejections_m.version},
                                    inputs=searched.inputs + [rejections_m.input_ref()],
                                    stats={"report": report_dict(report), "embedding": asdict(searched.embed_stats)})
    log.info("mine: %d negatives for %d queries, %d candidates rejected", negatives_m.num_rows,
             sum(r.queries_mined for r in report.values()), rejections_m.num_rows)
    drift = None
    if previous is not None:
        log.info("mine: drift against negatives/%s %s", name, previous.version)
        now = MinedRun(version=negatives_m.version, queries=report_parts[QUERY].select(["task", "example_id",
                                                                                        "positive_score"]),
                       negatives=report_parts[NEGATIVE].select(["task", "example_id", "neg_id", "neg_score"]),
                       flagged=pa.concat_tables(ray.get([ray.remote(flagged).remote(p) for p in parts[REJECTED]])
                                                if parts[REJECTED] else previous.flagged.slice(0, 0)))
        drift = write_drift(catalog, previous, now, searched, negatives_m)
    return MineResult(negatives=negatives_m, rejections=rejections_m, report=report,
                      embed_stats=searched.embed_stats, run_id=run_id, drift=drift)
