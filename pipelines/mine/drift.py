"""Mining, after the write: the drift report against the previous negatives of the same name.

When ``negatives/<name>`` already had a version, the new one is compared with it
(``miners.drift``) and the result is committed as ``drift/<name>``: one row per query
(view ``drift`` in ``quarry query``), the per-task summary in its manifest, and
``drift.png``. The previous run is read back from its negatives and rejections versions;
the new one comes from the selection output still in the object store.

Tested by tests/pipelines/mine/test_refresh_ray.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from miners.drift import (DRIFT_SCHEMA, FALSE_NEGATIVE_REASONS, MinedRun, TaskDrift, drift_dict, format_drift,
                          plot_drift, query_drift, task_drift)
from pipelines.mine.reuse import companion_version
from pipelines.mine.search import SearchResult
from storage import Catalog, Manifest

KIND = "drift"
FLAGGED_COLUMNS = ["task", "example_id", "cand_id"]


@dataclass
class DriftResult:
    manifest: Manifest
    tasks: dict[str, TaskDrift]
    previous_version: str

    def summary(self) -> str:
        m = self.manifest
        return (format_drift(self.tasks, self.previous_version, m.config["version"])
                + f"\ndrift/{m.name}: committed {m.version}: {m.num_rows} queries (quarry query \"select * from drift\")")


def flagged(rejected: pa.Table) -> pa.Table:
    """The rejected candidates that drift counts as flagged false negatives (a Ray task)."""
    keep = pc.is_in(rejected.column("reason"), pa.array(FALSE_NEGATIVE_REASONS, pa.string()))
    return rejected.filter(keep).select(FLAGGED_COLUMNS)


def previous_run(catalog: Catalog, name: str, tasks: list[str]) -> MinedRun | None:
    """The latest committed negatives of ``name`` (with their rejections) for ``tasks``, or
    None. Tasks this run does not mine are left out of the comparison."""
    version = catalog.latest("negatives", name)
    if version is None:
        return None
    m = catalog.manifest("negatives", name, version)
    wanted = pc.field("task").isin(pa.array(tasks, pa.string()))
    negatives = catalog.read_table("negatives", name, version, filter=wanted,
                                   columns=["task", "example_id", "positive_score", "neg_id", "neg_text", "neg_score"])
    rejections_version = companion_version(m, "rejections")
    columns = ["task", "example_id", "positive_score", "cand_id", "reason"]
    rejections = (catalog.read_table("rejections", name, rejections_version, columns=columns, filter=wanted)
                  if rejections_version else pa.table({c: pa.array([], pa.string()) for c in columns}))
    # A mined query has at least one negative or one rejected candidate: together they name them all.
    seen = pa.concat_tables([negatives.select(["task", "example_id", "positive_score"]),
                             rejections.select(["task", "example_id", "positive_score"])
                             .cast(negatives.select(["task", "example_id", "positive_score"]).schema)])
    queries = seen.group_by(["task", "example_id"], use_threads=False).aggregate([("positive_score", "min")]) \
        .rename_columns(["task", "example_id", "positive_score"])
    return MinedRun(version=version, queries=queries, negatives=negatives.drop_columns(["positive_score"]),
                    flagged=flagged(rejections))


def searched_pools(searched: SearchResult) -> dict[str, pa.Table]:
    """Task -> the pool (id, text) this run searched for it."""
    return {task: searched.pools[plan.pool].table.select(["id", "text"]) for task, plan in searched.plans.items()}


def write_drift(catalog: Catalog, previous: MinedRun, new: MinedRun, searched: SearchResult,
                negatives: Manifest) -> DriftResult:
    rows = query_drift(previous, new)
    tasks = task_drift(previous, new, rows, searched_pools(searched))
    with catalog.writer(KIND, negatives.name) as writer:
        writer.write_table(rows.cast(DRIFT_SCHEMA))
        writer.attach("drift.png", plot_drift(rows, previous, new))
        manifest = writer.commit(
            config={"built_by": "quarry mine", "previous_version": previous.version, "version": new.version},
            inputs=[catalog.manifest("negatives", negatives.name, previous.version).input_ref(),
                    negatives.input_ref()],
            stats={"tasks": drift_dict(tasks)}, allow_empty=True)
    return DriftResult(manifest=manifest, tasks=tasks, previous_version=previous.version)
