"""Where a training run stands on the data root: its checkpoints, the steps done, and the
schedule's length. ``quarry run`` reads it to resume or skip training; ``quarry train
--resume`` to find the checkpoint. Tested by ``tests/pipelines/train/test_train_ray.py``.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

from storage import Catalog, DataRoot, InputError, Manifest
from storage.published import saved_model
from trainers.config import TrainConfig

log = logging.getLogger("quarry")


@dataclass(frozen=True)
class CheckpointRef:
    path: str  # inside the data root
    step: int


def latest_checkpoint(root: DataRoot, run_dir: str) -> CheckpointRef | None:
    """The checkpoint with the highest step under a run folder, or None. A checkpoint counts
    once both its state and its metrics are there (Ray uploads them file by file)."""
    from trainers.train_loop import CHECKPOINT_METRICS, STATE_FILE

    best = None
    for entry in root.list_dir(run_dir):
        metrics = posixpath.join(entry.path, CHECKPOINT_METRICS)
        if entry.type != pafs.FileType.Directory or not all(
                root.exists(p) for p in (posixpath.join(entry.path, STATE_FILE), metrics)):
            continue
        step = int(json.loads(root.read_bytes(metrics))["step"])
        if best is None or step > best.step:
            best = CheckpointRef(entry.path, step)
    return best


@dataclass
class RunState:
    done: int | None  # last checkpointed step, None: no checkpoint
    total: int  # the schedule's length
    saved: bool = True  # its model is published under models/ (False: killed after the last checkpoint)

    @property
    def finished(self) -> bool:
        """Every step checkpointed and the model saved. A run stopped between its last
        checkpoint and the save is not: resuming it saves the model."""
        return self.done is not None and self.done >= self.total and self.saved


def batches_in(cfg: TrainConfig, data: Manifest) -> int:
    """Global batches per pass over the run's data: as packed in shards, or a corpus's
    passages over ``global_batch`` (the incomplete last batch of an epoch is dropped)."""
    if cfg.data_kind == "shards":
        return data.config["batches"]
    batches = data.num_rows // cfg.global_batch
    if batches < 1:
        raise InputError(f"corpus/{cfg.corpus} holds {data.num_rows} passages, fewer than one global batch of "
                         f"{cfg.global_batch}: lower global_batch")
    return batches


def run_state(cfg: TrainConfig, catalog: Catalog) -> RunState:
    data = catalog.manifest(cfg.data_kind, cfg.data_name)
    checkpoint = latest_checkpoint(catalog.root, catalog.root.path("runs", cfg.run_name))
    return RunState(done=checkpoint.step if checkpoint else None, total=cfg.total_steps(batches_in(cfg, data)),
                    saved=saved_model(catalog.root, cfg.run_name) is not None)


def discard_uncheckpointed_run(cfg: TrainConfig, catalog: Catalog) -> bool:
    """Remove the folder of a run that died before its first checkpoint (it holds only logs).

    Returns whether there was one. A run with a checkpoint is never touched.
    """
    root = catalog.root
    run_dir = root.path("runs", cfg.run_name)
    if not root.is_dir(run_dir) or latest_checkpoint(root, run_dir) is not None:
        return False
    log.info("train: %s has no checkpoint; starting it again", root.display(run_dir))
    root.fs.delete_dir(run_dir)
    return True
