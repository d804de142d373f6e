"""Mining, stage 2: selection, the pure rules of ``miners.select`` as a Ray Data stage.

``SelectNegatives`` is a Ray Data callable class: each actor takes the candidate pools out
of the object store once (Arrow tables, without a copy) and the per-task plans, then turns
chunks of query rows into output rows of three kinds:

- ``negative``: a chosen negative;
- ``rejected``: a rejected candidate and its reason;
- ``query``: one per mined query, with its anchor positive score and the threshold that
  selection applied, which the report reads instead of computing it again.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from miners.select import QueryFacts, select_for_query
from pipelines.mine_config import TaskPlan, describe_selection
from pipelines.mine_search import SearchResult

log = logging.getLogger("quarry")

NEGATIVE, REJECTED, QUERY = "negative", "rejected", "query"

NEGATIVE_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("neg_id", pa.string()),
    ("neg_text", pa.string()), ("neg_score", pa.float32()), ("neg_rank", pa.int32()), ("label", pa.string()),
    ("neg_label", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()), ("teacher", pa.string()),
    ("run_id", pa.string()),
])
REJECTION_SCHEMA = pa.schema([
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("query", pa.string()),
    ("positive_id", pa.string()), ("positive_score", pa.float32()), ("cand_id", pa.string()),
    ("cand_text", pa.string()), ("cand_score", pa.float32()), ("cand_rank", pa.int32()), ("label", pa.string()),
    ("cand_label", pa.string()), ("reason", pa.string()), ("strategy", pa.string()), ("threshold", pa.float32()),
    ("teacher", pa.string()), ("run_id", pa.string()),
])
# The stage's own rows: the negatives' columns, with the two scores selection computes kept
# in float64 until the writers cast them (query rows feed the report at full precision).
SELECTED_SCHEMA = pa.schema([
    ("row_kind", pa.string()),
    *(pa.field(f.name, pa.float64()) if f.name in ("positive_score", "threshold") else f for f in NEGATIVE_SCHEMA),
    ("reason", pa.string()),
])


class _PyView:
    """Position -> Python value over an Arrow array, without converting the whole pool."""

    def __init__(self, column: pa.ChunkedArray | pa.Array):
        self.array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def __getitem__(self, position: int):
        return self.array[position].as_py()


class SelectNegatives:
    """Ray Data callable class: query rows (``mine_search.QUERY_SCHEMA``) -> ``SELECTED_SCHEMA`` rows.

    ``pools``: pool name -> table (id, text, hash, label), or an ObjectRef of one.
    """

    def __init__(self, pools: dict, plans: dict[str, TaskPlan], teacher: str, run_id: str):
        import ray

        self.pools = {}
        for name, table in pools.items():
            table = ray.get(table) if isinstance(table, ray.ObjectRef) else table
            self.pools[name] = {c: _PyView(table.column(c)) for c in ("id", "text", "hash", "label")}
        self.plans, self.teacher, self.run_id = plans, teacher, run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {f.name: [] for f in SELECTED_SCHEMA}
        cols = {c: batch.column(c).to_pylist() for c in batch.column_names}
        for i in range(batch.num_rows):
            plan = self.plans[cols["task"][i]]
            pool = self.pools[plan.pool]
            facts = QueryFacts(example_id=cols["example_id"][i], positive_positions=cols["positive_positions"][i],
                               positive_scores=cols["positive_scores"][i], self_position=cols["self_position"][i],
                               label=cols["label"][i], cross_positive_positions=frozenset(cols["cross_positions"][i]))
            sel = select_for_query(np.asarray(cols["cand_positions"][i]), np.asarray(cols["cand_scores"][i]), facts,
                                   pool["hash"], pool["label"] if plan.filters_same_class else None, plan.selection)
            # The threshold is anchored on the lowest-scoring positive: that is the one reported.
            anchor = int(np.argmin(facts.positive_scores))
            anchor_id, anchor_score = pool["id"][facts.positive_positions[anchor]], facts.positive_scores[anchor]
            threshold = sel.threshold if np.isfinite(sel.threshold) else None
            # (kind, candidate id, text, score, teacher rank, label, reason); the query row has no candidate.
            rows = [(NEGATIVE, pool["id"][p], pool["text"][p], s, r, pool["label"][p], None) for p, s, r in sel.chosen]
            rows += [(REJECTED, pool["id"][p], pool["text"][p], s, r, pool["label"][p], why)
                     for p, s, r, why in sel.rejected]
            rows.append((QUERY, None, None, None, None, None, None))
            for kind, cand_id, text, score, rank, cand_label, why in rows:
                values = (kind, plan.task, plan.task_type, facts.example_id, cols["query"][i], anchor_id, anchor_score,
                          cand_id, text, score, rank, facts.label, cand_label, plan.selection.strategy, threshold,
                          self.teacher, self.run_id, why)
                for name, value in zip(SELECTED_SCHEMA.names, values):
                    out[name].append(value)
        return pa.Table.from_pydict(out, schema=SELECTED_SCHEMA)


def select_on_ray(searched: SearchResult, chunk_rows: int, run_id: str) -> list:
    """The selection stage over chunks of ``chunk_rows`` queries; returns ordered block refs."""
    import ray
    import ray.data

    queries = searched.queries
    if queries.num_rows == 0:
        return []  # every query kept its previous negatives (pipelines.mine_reuse)
    chunks = [queries.slice(i, chunk_rows) for i in range(0, queries.num_rows, chunk_rows)]
    pool_refs = {name: ray.put(pool.table) for name, pool in searched.pools.items()}
    log.info("mine: selecting negatives for %d queries: %s", queries.num_rows, describe_selection(searched.plans))
    selected = ray.data.from_arrow(chunks).map_batches(
        SelectNegatives, fn_constructor_kwargs={"pools": pool_refs, "plans": searched.plans,
                                                "teacher": searched.teacher.label, "run_id": run_id},
        batch_size=None, batch_format="pyarrow", compute=selection_pool(len(chunks)), num_cpus=1)
    return selected.to_arrow_refs()


def selection_pool(chunks: int):
    """Up to one actor per CPU (never more than chunks), at least one when CPUs are busy.

    The stage reads its blocks from the object store and leaves its output there, so it
    needs no read or write tasks that a full pool could starve. On 2 cores, 2 actors select
    for the 37,809 vital queries in about 9 s, one actor in 11.7 s (docs/benchmarks.md).
    """
    import ray
    from ray.data import ActorPoolStrategy

    cpus = int(ray.cluster_resources().get("CPU", 1))
    most = max(1, min(chunks, cpus))
    return ActorPoolStrategy(min_size=1, max_size=most, initial_size=most)
