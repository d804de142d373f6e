"""The texts of the candidate pools, looked up by pool position.

Selection names candidates by pool position and carried-over rows by id; both get their
texts here, where they are written, instead of carrying them through the stages
(``pipelines.mine.select.SelectedTexts``, ``pipelines.mine.reuse.carried_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass
class PoolTexts:
    """Each pool's texts in pool position order, and the pool each task searched. The
    texts may be ObjectRefs (``put``) for Ray tasks to read without a copy."""

    texts: dict[str, object]  # pool name -> pa.ChunkedArray, or an ObjectRef of one
    pool_of_task: dict[str, str]

    def put(self) -> "PoolTexts":
        import ray

        return PoolTexts({name: ray.put(t) for name, t in self.texts.items()}, self.pool_of_task)

    def at(self, tasks: pa.ChunkedArray, positions: np.ndarray) -> pa.ChunkedArray:
        """The text at ``positions[i]`` of the pool of ``tasks[i]``."""
        names = list(self.texts)
        pools = [resolved(self.texts[n]) for n in names]
        offsets = dict(zip(names, np.cumsum([0] + [len(p) for p in pools])))
        at = np.array(positions, dtype=np.int64)
        task_values = tasks.to_numpy(zero_copy_only=False)
        for task in np.unique(task_values):
            at[task_values == task] += offsets[self.pool_of_task[task]]
        return pa.chunked_array([c for p in pools for c in p.chunks], pa.string()).take(pa.array(at))


def resolved(value):
    """``value``, or what it refers to when it is a Ray ObjectRef."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
