"""The training shards: the trainer's own input format, packed by ``quarry export`` and read
one global batch at a time by every worker.

Each row is one training example: a query with its instruction, its positive, and k hard
negatives, plus the keys the loss uses to mask false negatives (text hashes, label ids).
Rows are packed into global batches:

- every global batch comes from one task, so in-batch negatives are meaningful;
- it carries ``in_batch``: True for retrieval, False for classification and clustering
  (NV-Embed stage 2: with few-class labels, other in-batch examples are often positives);
- it is cut evenly across ``workers`` (``worker`` column), ``global_batch / workers`` rows each;
- per task the examples are shuffled with the seed and cut into batches, the incomplete
  last batch is dropped (LLM2Vec), then the batches of all tasks are shuffled together.

The schema lives here rather than with the other published schemas (``storage.schemas``)
because the trainer is its reader: packing and reading are kept side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from storage import mask_key, stable_rng, stable_seed
from storage.schemas import allows_in_batch_negatives

SHARD_SCHEMA = pa.schema([
    ("batch_index", pa.int64()), ("position", pa.int32()), ("worker", pa.int32()), ("in_batch", pa.bool_()),
    ("task", pa.string()), ("task_type", pa.string()), ("example_id", pa.string()), ("instruction", pa.string()),
    ("query", pa.string()), ("positive", pa.string()), ("negatives", pa.list_(pa.string())),
    ("pos_key", pa.int64()), ("neg_keys", pa.list_(pa.int64())), ("label_id", pa.int64()),
    ("neg_label_ids", pa.list_(pa.int64())),
])
NO_LABEL = -1  # label_id of a retrieval example, or of a negative without a label


@dataclass(frozen=True)
class ShardExample:
    """One example as the export hands it to the packer; ``row`` adds the mask keys."""

    task: str
    task_type: str
    example_id: str
    instruction: str | None
    query: str
    positive: str
    negatives: tuple[str, ...]
    label_id: int = NO_LABEL
    neg_label_ids: tuple[int, ...] = ()

    def row(self) -> dict:
        return {"task": self.task, "task_type": self.task_type, "example_id": self.example_id,
                "instruction": self.instruction, "query": self.query, "positive": self.positive,
                "negatives": list(self.negatives), "pos_key": mask_key(self.positive),
                "neg_keys": [mask_key(t) for t in self.negatives], "label_id": self.label_id,
                "neg_label_ids": list(self.neg_label_ids or [NO_LABEL] * len(self.negatives))}


@dataclass
class TaskPacking:
    """What packing did with one task's examples."""

    examples: int = 0
    batches: int = 0
    dropped_incomplete: int = 0  # left out of the task's last, incomplete global batch
    short_of_negatives: int = 0  # left out before packing: fewer negatives than asked for

    def describe(self) -> str:
        return (f"{self.examples} examples, {self.batches} batches, {self.dropped_incomplete} left out of the last "
                f"incomplete batch, {self.short_of_negatives} short of negatives")


def pack_batches(rows_by_task: dict[str, list[dict]], global_batch: int, workers: int, seed: int
                 ) -> tuple[list[dict], dict[str, TaskPacking]]:
    """Deterministic single-task global batches (pure; the packing tests call it directly).

    ``rows_by_task``: task -> rows with at least ``task``, ``task_type`` and ``example_id``
    (``ShardExample.row()``); returns the rows in ``SHARD_SCHEMA`` order of batches, each
    with its batch index, position, worker and ``in_batch`` flag, and what became of each task.
    """
    batches: list[tuple[str, list[dict]]] = []
    stats: dict[str, TaskPacking] = {}
    for task in sorted(rows_by_task):
        rows = sorted(rows_by_task[task], key=lambda r: r["example_id"])
        order = stable_rng(seed, "task", task).permutation(len(rows))
        full = len(rows) // global_batch
        for b in range(full):
            batches.append((task, [rows[i] for i in order[b * global_batch:(b + 1) * global_batch]]))
        stats[task] = TaskPacking(examples=len(rows), batches=full, dropped_incomplete=len(rows) - full * global_batch)
    out = []
    per_worker = global_batch // workers
    for batch_index, j in enumerate(stable_rng(seed, "batches").permutation(len(batches))):
        task, members = batches[j]
        for position, row in enumerate(members):
            out.append({**row, "batch_index": batch_index, "position": position, "worker": position // per_worker,
                        "in_batch": allows_in_batch_negatives(row["task_type"])})
    return out, stats


def batch_order(num_batches: int, epoch: int, seed: int) -> np.ndarray:
    """The shards' global batches in epoch ``epoch``: as exported first, then permuted."""
    if epoch == 0:
        return np.arange(num_batches)  # the export already shuffled them
    # 4 bytes: a wider seed would change the batch order of runs already trained, which a
    # resumed or repeated run must reproduce.
    return np.random.default_rng(stable_seed(seed, "epoch", epoch, nbytes=4)).permutation(num_batches)


class ShardReader:
    """This worker's rows of one packed global batch at a time, read from Parquet on demand."""

    def __init__(self, files: list[str], filesystem, rank: int, num_batches: int, seed: int):
        self.dataset = pds.dataset(files, filesystem=filesystem, format="parquet")
        self.rank, self.num_batches, self.seed = rank, num_batches, seed

    def batch_for_step(self, step: int) -> list[dict]:
        epoch, i = divmod(step, self.num_batches)
        return self.batch(int(batch_order(self.num_batches, epoch, self.seed)[i]))

    def batch(self, index: int) -> list[dict]:
        """This worker's rows of global batch ``index``, in position order."""
        table = self.dataset.to_table(filter=(pc.field("batch_index") == index) & (pc.field("worker") == self.rank))
        return sorted(table.to_pylist(), key=lambda r: r["position"])


def global_batch_rows(table: pa.Table, index: int) -> list[dict]:
    """Every worker's rows of global batch ``index`` of a shards table, as the workers hold
    them one after another (the layer sweep scores whole global batches)."""
    rows = table.filter(pc.field("batch_index") == index).to_pylist()
    return sorted(rows, key=lambda r: (r["worker"], r["position"]))
