"""Mining, stage 2: selection, the rules of ``miners.select`` (vectorised by
``miners.select_batch``) as Ray tasks.

``SelectNegatives`` holds the candidate pools (ids, labels, and the codes selection
compares) and the per-task plans; one Ray task per chunk of queries calls it, and it turns
query rows into output rows of three kinds:

- ``negative``: a chosen negative;
- ``rejected``: a rejected candidate and its reason;
- ``query``: one per mined query, with its anchor positive score and the threshold that
  selection applied, which the report reads instead of computing it again.

The rows name their texts by position instead of carrying them: the query by its row in
the search's query table, the candidate by its pool position. ``SelectedTexts.join`` puts
the texts in where the rows are written. Carried through the object store, the texts were
775 MB of the 37,419 vital queries' output (the text of every rejected candidate, and the
query's text on each of its rows), copied at every step from the stage to the files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from miners.select import REASONS
from miners.select_batch import CandidateBatch, PoolCodes, Ragged, select_batch
from pipelines.mine.config import TaskPlan, describe_selection
from pipelines.mine.search import SearchResult
from pipelines.mine.texts import PoolTexts, resolved
from storage.schemas import NEGATIVE_SCHEMA

log = logging.getLogger("quarry")

NEGATIVE, REJECTED, QUERY = "negative", "rejected", "query"

# The stage's own rows: the negatives' columns without their texts, with the two scores
# selection computes kept in float64 until the writers cast them (query rows feed the report
# at full precision), and the positions that name the texts.
TEXT_POSITIONS = {"query": "query_row", "neg_text": "neg_position"}
SELECTED_SCHEMA = pa.schema([
    ("row_kind", pa.string()),
    *(pa.field(f.name, pa.float64()) if f.name in ("positive_score", "positive_judge_score", "threshold") else f
      for f in NEGATIVE_SCHEMA if f.name not in TEXT_POSITIONS),
    ("reason", pa.string()), *(pa.field(p, pa.int64()) for p in TEXT_POSITIONS.values()),
])


@dataclass(frozen=True)
class _PoolColumns:
    """One candidate pool as the stage reads it: Arrow columns to take output values from,
    and the codes ``select_batch`` compares."""

    table: pa.Table  # id, label, source_id
    codes: PoolCodes  # hash codes, label codes (-1: none)
    label_values: pa.Array  # the label dictionary that the codes index

    @classmethod
    def of(cls, table: pa.Table) -> "_PoolColumns":
        hashes = pc.dictionary_encode(table.column("hash")).combine_chunks()
        labels = pc.dictionary_encode(table.column("label")).combine_chunks()
        return cls(table=table.select(["id", "label", "source_id"]).combine_chunks(),
                   codes=PoolCodes(hashes=_codes(hashes.indices), labels=_codes(labels.indices)),
                   label_values=labels.dictionary)


def _codes(indices: pa.Array) -> np.ndarray:
    return indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _ragged(column: pa.ChunkedArray, dtype) -> Ragged:
    lists = column.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values = lists.values.to_numpy(zero_copy_only=False).astype(dtype)  # offsets may not start at 0 in a slice
    return Ragged(values[offsets[0]:offsets[-1]], offsets - offsets[0])


def _matrix(lists: Ragged, fill) -> np.ndarray:
    """A list column as a (rows x longest) matrix, short rows padded with ``fill``."""
    width = int(lists.lengths.max(initial=0))
    out = np.full((len(lists.offsets) - 1, width), fill, dtype=lists.values.dtype)
    rows = lists.row_of_each_value()
    out[rows, np.arange(lists.values.size) - lists.offsets[rows]] = lists.values
    return out


class SelectNegatives:
    """Query rows (``mine_search.QUERY_SCHEMA``) -> ``SELECTED_SCHEMA`` rows; called in a
    Ray task per chunk of queries (``select_on_ray``), or in process.

    ``pools``: pool name -> table (id, hash, label; text is not read). Each run of one
    task's rows in a batch goes through ``miners.select_batch.select_batch`` at once;
    the output holds that run's negatives, then its rejections, then its query rows, each
    in query order and then teacher rank order.
    """

    def __init__(self, pools: dict[str, pa.Table], plans: dict[str, TaskPlan], teacher: str, run_id: str,
                 judge: str | None = None):
        # Built once, in the driver: select_on_ray puts the whole selector in the object store.
        self.pools = {name: _PoolColumns.of(table) for name, table in pools.items()}
        self.plans, self.teacher, self.run_id, self.judge = plans, teacher, run_id, judge

    def __call__(self, batch: pa.Table) -> pa.Table:
        tasks = batch.column("task").to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.concatenate([[True], tasks[1:] != tasks[:-1]])) if len(tasks) else np.zeros(0, int)
        parts = [self._task_rows(batch.slice(a, b - a)) for a, b in zip(starts, [*starts[1:], len(tasks)])]
        return pa.concat_tables(parts) if parts else SELECTED_SCHEMA.empty_table()

    def _task_rows(self, rows: pa.Table) -> pa.Table:
        plan = self.plans[rows.column("task")[0].as_py()]
        pool = self.pools[plan.pool]
        positives = _ragged(rows.column("positive_positions"), np.int64)
        label_codes = pc.index_in(rows.column("label"), value_set=pool.label_values)
        teacher = _Scores(_matrix(_ragged(rows.column("cand_scores"), np.float32), np.float32(0)),
                          _ragged(rows.column("positive_scores"), np.float32))
        # With a judge, its scores are the ones the rules read; the teacher's are written beside them.
        judged = _Scores(_matrix(_ragged(rows.column("judge_cand_scores"), np.float32), np.float32(0)),
                         _ragged(rows.column("judge_positive_scores"), np.float32)) if self.judge else None
        ruling = judged or teacher
        cand = CandidateBatch(
            positions=_matrix(_ragged(rows.column("cand_positions"), np.int64), -1),
            scores=ruling.candidates, positives=positives, positive_scores=ruling.positives,
            self_positions=rows.column("self_position").fill_null(-1).to_numpy().astype(np.int64),
            labels=_codes(label_codes.combine_chunks()),
            cross_positives=_ragged(rows.column("cross_positions"), np.int64),
            example_ids=rows.column("example_id").to_pylist() if plan.selection.sampling == "random" else [],
            positive_sims=(_matrix(_ragged(rows.column("positive_sims"), np.float32), np.float32(0))
                           if plan.selection.max_positive_similarity is not None else None))
        codes = pool.codes if plan.filters_same_class else PoolCodes(hashes=pool.codes.hashes, labels=None)
        sel = select_batch(cand, codes, plan.selection)
        # The threshold is anchored on the lowest-scoring positive: that is the one reported.
        anchor_ids = pool.table.column("id").take(positives.values[np.maximum(sel.anchors, 0)])
        anchor_ids = pc.if_else(pa.array(sel.anchors >= 0), anchor_ids, pa.nulls(len(anchor_ids), pa.string()))
        per_query = {"example_id": rows.column("example_id"), "query_source_id": rows.column("source_id"),
                     "query_row": rows.column("query_row"), "positive_id": anchor_ids,
                     "positive_score": teacher.of_anchors(sel.anchors),
                     "positive_judge_score": (judged.of_anchors(sel.anchors) if judged else
                                              pa.nulls(rows.num_rows, pa.float64())),
                     "label": rows.column("label"),
                     "threshold": pa.array(sel.thresholds, mask=~np.isfinite(sel.thresholds))}
        negatives = np.nonzero(sel.chosen)
        rejected = np.nonzero(sel.rejected())
        reasons = pa.array(REASONS).take(pa.array(sel.reasons[rejected].astype(np.int64) - 1))
        everyone = np.arange(rows.num_rows)
        cand = _Candidates(cand.positions, teacher.candidates, judged.candidates if judged else None)
        return pa.concat_tables([
            self._rows(NEGATIVE, plan, per_query, negatives, cand, pool, None),
            self._rows(REJECTED, plan, per_query, rejected, cand, pool, reasons),
            self._rows(QUERY, plan, per_query, (everyone, None), cand, pool, None)])

    def _rows(self, kind: str, plan: TaskPlan, per_query: dict, at: tuple, cand: "_Candidates",
              pool: _PoolColumns, reasons: pa.Array | None) -> pa.Table:
        """Rows of one kind: ``at`` = (query indices, candidate columns), or (queries, None)
        for query rows, which name no candidate."""
        queries, columns = at
        n = len(queries)
        take = pa.array(queries, pa.int64())
        columns_out = {"row_kind": pa.repeat(kind, n), "task": pa.repeat(plan.task, n),
                       "task_type": pa.repeat(plan.task_type, n),
                       "strategy": pa.repeat(plan.selection.strategy, n), "teacher": pa.repeat(self.teacher, n),
                       "run_id": pa.repeat(self.run_id, n), "judge": pa.repeat(self.judge, n).cast(pa.string()),
                       **{name: column.take(take) for name, column in per_query.items()}}
        if columns is None:
            candidate = {name: pa.nulls(n, SELECTED_SCHEMA.field(name).type)
                         for name in ("neg_id", "neg_source_id", "neg_position", "neg_score", "neg_rank", "neg_label",
                                      "neg_judge_score")}
        else:
            at_pool = pa.array(cand.positions[queries, columns], pa.int64())
            candidate = {"neg_id": pool.table.column("id").take(at_pool),
                         "neg_source_id": pool.table.column("source_id").take(at_pool), "neg_position": at_pool,
                         "neg_score": pa.array(cand.scores[queries, columns], pa.float32()),
                         "neg_rank": pa.array(columns, pa.int32()),
                         "neg_label": pool.table.column("label").take(at_pool),
                         "neg_judge_score": (pa.array(cand.judge_scores[queries, columns], pa.float32())
                                             if cand.judge_scores is not None else pa.nulls(n, pa.float32()))}
        columns_out.update(candidate)
        columns_out["reason"] = reasons if reasons is not None else pa.nulls(n, pa.string())
        return pa.table([columns_out[f.name] for f in SELECTED_SCHEMA], schema=SELECTED_SCHEMA)


@dataclass(frozen=True)
class _Scores:
    """One model's scores of a batch: the candidates (Q, K) and each query's positives."""

    candidates: np.ndarray
    positives: Ragged

    def of_anchors(self, anchors: np.ndarray) -> pa.Array:
        """The score of each query's anchor positive (null for a query without one)."""
        values = self.positives.values
        picked = values[np.maximum(anchors, 0)] if values.size else np.zeros(len(anchors))
        return pa.array(np.where(anchors >= 0, picked, np.nan).astype(np.float64), mask=anchors < 0)


@dataclass(frozen=True)
class _Candidates:
    """What the output rows read of a batch's candidates."""

    positions: np.ndarray
    scores: np.ndarray  # the teacher's
    judge_scores: np.ndarray | None


@dataclass
class SelectedTexts:
    """The texts selection's rows name by position: the search's query texts and each
    pool's texts, as Arrow arrays or as ObjectRefs of them (``put``), for the write tasks."""

    queries: object  # pa.ChunkedArray, or an ObjectRef of one
    pools: PoolTexts

    @classmethod
    def of(cls, searched: SearchResult) -> "SelectedTexts":
        return cls(queries=searched.queries.column("query"), pools=searched.pool_texts())

    def put(self) -> "SelectedTexts":
        import ray

        return SelectedTexts(queries=ray.put(self.queries), pools=self.pools.put())

    def join(self, rows: pa.Table, schema: pa.Schema) -> pa.Table:
        """Rows of one kind (a split of selection's output) in ``schema``, texts put in.
        Rows that hold their texts already (carried over from the previous run) only take
        the schema."""
        if "query_row" in rows.column_names:
            text = next(name for name in schema.names if name.endswith("_text"))  # neg_text, cand_text
            position = text.replace("_text", "_position")
            texts = {"query": resolved(self.queries).take(rows.column("query_row")),
                     text: self.pools.at(rows.column("task"), rows.column(position).to_numpy())}
            rows = rows.drop_columns(["query_row", position])
            for name in schema.names:
                if name in texts:
                    rows = rows.add_column(schema.get_field_index(name), name, texts[name])
        return rows.select(schema.names).cast(schema)


def select_on_ray(searched: SearchResult, chunk_rows: int, run_id: str) -> list:
    """The selection stage over chunks of ``chunk_rows`` queries, one Ray task each; returns
    the output block refs in query order.

    The selector (pool ids, labels and codes, the plans) is built once in the driver and
    put in the object store, so a task only reads it (Arrow and numpy buffers, no copy)
    and selects. Vectorised, the selection itself is short (1.8 s for the 37,419 vital
    queries in one process), so a task costs less than starting actors for it did: the
    stage took 5.2 s on a pool of 2 actors in a 5% re-mine, most of it their start-up
    (docs/benchmarks.md).
    """
    import ray

    queries = searched.queries
    if queries.num_rows == 0:
        return []  # every query kept its previous negatives (pipelines.mine.reuse)
    judged = f"; the score rules read the judge's scores ({searched.judge})" if searched.judge else ""
    log.info("mine: selecting negatives for %d queries: %s%s", queries.num_rows, describe_selection(searched.plans),
             judged)
    selector = ray.put(SelectNegatives({name: pool.table for name, pool in searched.pools.items()}, searched.plans,
                                       searched.teacher.label, run_id, searched.judge))
    task = ray.remote(num_cpus=1)(_select_chunk)
    return [task.remote(selector, queries.slice(i, chunk_rows)) for i in range(0, queries.num_rows, chunk_rows)]


def _select_chunk(selector: SelectNegatives, chunk: pa.Table) -> pa.Table:
    return selector(chunk)
