"""Corpus passages for the text objectives (MNTP, SimCSE), one step's worth at a time.

The corpus is never loaded whole: a worker reads the Parquet row groups its step needs
(one column) and keeps the last two. Each epoch walks the row groups in an order keyed on
(seed, epoch), and the rows of each group in an order keyed on (seed, epoch, group): a
block shuffle, so a step reads one or two groups while the passages of a batch still come
from all over each group. Global batch ``s`` of an epoch is stream rows [s*B, (s+1)*B);
worker ``rank`` takes its contiguous share of it, and the incomplete last batch of an
epoch is dropped. Everything is a function of (seed, step, rank), so a resumed run reads
exactly what an undisturbed one would have.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from storage import stable_seed

TEXT_COLUMN = "text"


@dataclass(frozen=True)
class RowGroup:
    file: str
    index: int  # row group within the file
    rows: int


def row_groups(files: list[str], filesystem) -> list[RowGroup]:
    """Every row group of the files, in file order, from the Parquet footers only."""
    out = []
    for path in files:
        with filesystem.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        out.extend(RowGroup(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups))
    return out


def batches_per_epoch(total_rows: int, global_batch: int) -> int:
    return total_rows // global_batch


class TextBatches:
    """This worker's passages of any step: ``texts_for_step(step)``."""

    def __init__(self, groups: list[RowGroup], filesystem, rank: int, world: int, global_batch: int, seed: int,
                 column: str = TEXT_COLUMN, cache_groups: int = 2):
        self.groups, self.fs, self.column = groups, filesystem, column
        self.rank, self.per_worker, self.global_batch, self.seed = rank, global_batch // world, global_batch, seed
        self.total = sum(g.rows for g in groups)
        self.num_batches = batches_per_epoch(self.total, global_batch)
        if self.num_batches < 1:
            raise ValueError(f"the corpus holds {self.total} passages, fewer than one global batch of {global_batch}")
        self._cache: OrderedDict[int, list[str]] = OrderedDict()
        self._cache_groups = cache_groups
        self._epoch: int | None = None

    def _start_epoch(self, epoch: int) -> None:
        if self._epoch == epoch:
            return
        self._epoch = epoch
        self._order = np.random.default_rng(stable_seed(self.seed, "text-epoch", epoch)).permutation(len(self.groups))
        self._ends = np.cumsum([self.groups[g].rows for g in self._order])  # stream row where each group ends

    def _group_rows(self, group: int) -> list[str]:
        key = group
        if key not in self._cache:
            g = self.groups[group]
            with self.fs.open_input_file(g.file) as f:
                texts = pq.ParquetFile(f).read_row_group(g.index, columns=[self.column]).column(0).to_pylist()
            shuffled = np.random.default_rng(stable_seed(self.seed, "text-rows", self._epoch, group)).permutation(g.rows)
            self._cache[key] = [texts[i] for i in shuffled]
            while len(self._cache) > self._cache_groups:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def texts_for_step(self, step: int) -> list[str]:
        epoch, batch = divmod(step, self.num_batches)
        if self._epoch != epoch:
            self._cache.clear()  # rows are shuffled per epoch
        self._start_epoch(epoch)
        start = batch * self.global_batch + self.rank * self.per_worker
        out: list[str] = []
        position = start
        while len(out) < self.per_worker:
            slot = int(np.searchsorted(self._ends, position, side="right"))  # the group holding this stream row
            group_start = int(self._ends[slot - 1]) if slot else 0
            rows = self._group_rows(int(self._order[slot]))
            take = min(self.per_worker - len(out), len(rows) - (position - group_start))
            out.extend(rows[position - group_start:position - group_start + take])
            position += take
        return out
