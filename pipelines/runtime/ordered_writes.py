"""Ordered Parquet writes of Ray blocks into a storage writer's staging area.

``Dataset.write_parquet`` with ``min_rows_per_file`` coalesces blocks in arrival order, so
the row order of the files changes between identical runs. Quarry needs a stable order
(an unchanged rebuild must hash the same, and a resumed training run must see the same
data), so stages that hold their blocks in order write them here: consecutive blocks are
grouped to about ``rows_per_file`` rows and each group is written by one Ray task to a
file whose name carries its position.

Tested by tests/pipelines/builders/test_sources_ray.py (a rebuild is byte-identical).
"""

from __future__ import annotations

import posixpath
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq


def _write_group(path: str, filesystem, schema: pa.Schema | None, prepare: Callable[[pa.Table], pa.Table] | None,
                 parquet_options: dict, *blocks: pa.Table) -> int:
    if prepare is not None:
        blocks = tuple(prepare(b) for b in blocks)
    tables = [b for b in blocks if b.num_rows]
    table = pa.concat_tables(tables) if tables else blocks[0]
    if schema is not None:
        table = table.cast(schema)
    pq.write_table(table, path, filesystem=filesystem, **parquet_options)
    return table.num_rows


def write_blocks_ordered(block_refs: list, sizes: list[int], staging_dir: str, filesystem,
                         rows_per_file: int = 100_000, schema: pa.Schema | None = None,
                         prepare: Callable[[pa.Table], pa.Table] | None = None,
                         parquet_options: dict | None = None) -> int:
    """Write ``block_refs`` (in order) as ``part-NNNNN.parquet`` files; returns rows written.

    ``prepare``: applied to each block in the write task, before ``schema``'s cast (it must
    keep the row count: ``sizes`` plan the files). ``parquet_options``: passed to
    ``pyarrow.parquet.write_table``."""
    import ray

    return sum(ray.get(start_ordered_writes(block_refs, sizes, staging_dir, filesystem, rows_per_file, schema,
                                            prepare, parquet_options)))


def start_ordered_writes(block_refs: list, sizes: list[int], staging_dir: str, filesystem,
                         rows_per_file: int = 100_000, schema: pa.Schema | None = None,
                         prepare: Callable[[pa.Table], pa.Table] | None = None,
                         parquet_options: dict | None = None) -> list:
    """``write_blocks_ordered`` without waiting: returns the write tasks' refs (each gives
    its rows), so that the caller can work, or start other writes, while they run."""
    import ray

    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for i, size in enumerate(sizes):
        if current and rows + size > rows_per_file:
            groups.append(current)
            current, rows = [], 0
        current.append(i)
        rows += size
    if current:
        groups.append(current)
    write = ray.remote(_write_group)
    return [write.remote(posixpath.join(staging_dir, f"part-{g:05d}.parquet"), filesystem, schema, prepare,
                         parquet_options or {}, *[block_refs[i] for i in group]) for g, group in enumerate(groups)]


def _num_rows(block: pa.Table) -> int:
    return block.num_rows


def block_sizes(block_refs: list) -> list[int]:
    """Row counts of Arrow blocks in the object store, without bringing them to the driver."""
    import ray

    count = ray.remote(_num_rows)
    return ray.get([count.remote(r) for r in block_refs])
