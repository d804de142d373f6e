"""``quarry train --config configs/train/NAME.yaml [--resume]``: NV-Embed contrastive training
on Ray Train (``TorchTrainer``, DDP by default, FSDP as an option).

The driver resolves everything a worker needs (backbone folder, shard files, step count,
output paths) into a ``WorkerPlan`` and hands each worker ``run_worker(cfg, plan)``.
Checkpoints (trainable weights: LoRA + pooling head; optimizer; scheduler; step) go to
``<root>/runs/<run_name>`` through Ray Train, on any data root (``storage_filesystem``);
``metrics.jsonl`` and TensorBoard logs beside them; the final model to
``<root>/models/<run_name>`` (``trainers.run_files`` says how each appears whole on an
object store, and what stays in the local cache).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import yaml

from pipelines.runtime.local_ray import ensure_ray
from pipelines.train.backbone import Backbone, check_backbone, resolve_backbone
from pipelines.train.progress import TrainProgress
from pipelines.train.run_state import CheckpointRef, batches_in, latest_checkpoint
from storage import Catalog, DataRoot, InputError, Manifest, first_line
from storage.catalog import utc_now
from storage.schemas import RETRIEVAL
from trainers.config import TrainConfig
from trainers.lineage import Lineage

log = logging.getLogger("quarry")


def load_train_config(path: str, overrides: dict | None = None) -> TrainConfig:
    """A YAML file's settings, then ``overrides`` (values that are None are left out)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"{path}: no such training config") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (at byte offset {e.start})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of training settings")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(raw, where=os.path.basename(path))


@dataclass
class TrainResult:
    run_name: str
    metrics: dict  # the last step's: step, loss, lr, task, examples_per_s, tokens_per_s
    model_dir: str  # as a user names it: a local path, or s3://...
    run_dir: str
    tensorboard_dir: str  # local: the run's own on a local root, the rank-0 node's copy on an object store

    def summary(self) -> str:
        return (f"trained {self.run_name}: step {self.metrics.get('step')}, loss "
                f"{self.metrics.get('loss', float('nan')):.4f}; model in {self.model_dir}; "
                f"TensorBoard: tensorboard --logdir {self.tensorboard_dir}")


def lineage_of(cfg: TrainConfig, data: Manifest, backbone: Backbone, total_steps: int) -> Lineage:
    """What the model will have been made from: its parent (or backbone) and the exact data
    (the shards and what they were packed from, or the corpus of an mntp or simcse run)."""
    from miners.teacher import fingerprint

    return Lineage(model=cfg.run_name, backbone=cfg.backbone, parent=cfg.init_from,
                   parent_fingerprint=fingerprint(backbone.local) if cfg.init_from else None,
                   shards=f"{cfg.data_kind}/{data.name} {data.version}",
                   inputs=tuple(f"{i.kind}/{i.name} {i.version}" for i in data.inputs), steps=total_steps,
                   trained_at=utc_now(), objective=cfg.objective)


def check_shards(cfg: TrainConfig, shards: Manifest) -> None:
    """The shards must be cut for this run's workers (and global batch, if the config says)."""
    if shards.config.get("workers") != cfg.num_workers:
        raise InputError(f"shards/{cfg.shards} were packed for {shards.config.get('workers')} workers, "
                         f"the config asks for {cfg.num_workers}: export again with --workers {cfg.num_workers}")
    if cfg.global_batch is not None and shards.config.get("global_batch") != cfg.global_batch:
        raise InputError(f"shards/{cfg.shards} hold global batches of {shards.config.get('global_batch')} queries, "
                         f"the config asks for {cfg.global_batch}: export again with --global-batch {cfg.global_batch}")


def task_prompts(catalog: Catalog, shards: Manifest) -> dict[str, str]:
    """The instructions of every task of the examples the shards came from, as
    sentence-transformers prompt names the way mteb looks them up: ``<task>-query`` for a
    retrieval task (its documents get none), ``<task>`` for the other types (every text)."""
    ref = next((i for i in shards.inputs if i.kind == "examples"), None)
    if ref is None:
        return {}
    table = catalog.read_table("examples", ref.name, ref.version, columns=["task", "task_type", "instruction"])
    prompts: dict[str, str] = {}
    for task, task_type, instruction in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        if instruction:
            prompts.setdefault(f"{task}-query" if task_type == RETRIEVAL else task, instruction)
    return prompts


def train(cfg: TrainConfig, catalog: Catalog, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) ``cfg.run_name``. ``stop_after``: end after that many steps, on the
    schedule of the full run, with a checkpoint; ``--resume`` continues from it."""
    from trainers.run_files import RunFiles

    if stop_after is not None and stop_after < 1:
        raise InputError(f"--stop-after must be at least 1, got {stop_after}")
    # Every data file against the sha256 its manifest recorded: a damaged file stops here,
    # in one line, not as a parse error in a worker (or, worse, as silently different data).
    data = catalog.verify(cfg.data_kind, cfg.data_name)
    if cfg.data_kind == "shards":
        check_shards(cfg, data)
    root = catalog.root
    files = RunFiles.for_run(root, cfg.run_name)
    checkpoint = _checkpoint_to_resume(cfg, root, files, resume)
    backbone = resolve_backbone(cfg, catalog)
    check_backbone(cfg, backbone)
    if root.is_local:
        os.makedirs(files.run_dir, exist_ok=True)
    ensure_ray()
    plan = _worker_plan(cfg, catalog, data, backbone, files, checkpoint, stop_after)
    log.info("train: %s (%s) on %d %s worker(s), %d steps over %d global batches of %s/%s %s%s",
             cfg.run_name, cfg.objective, cfg.num_workers, "GPU" if cfg.use_gpu else "CPU", plan.total_steps,
             plan.num_batches, cfg.data_kind, cfg.data_name, data.version,
             f", resuming from step {checkpoint.step}" if checkpoint else "")
    with TrainProgress(root, files.run_dir, plan.total_steps):
        result = _trainer(cfg, plan, root).fit()
    metrics = dict(result.metrics or {})
    model_dir = root.display(files.model_dir)
    log.info("train: done at step %s, loss %.4f; model saved to %s", metrics.get("step"),
             metrics.get("loss", float("nan")), model_dir)
    return TrainResult(run_name=cfg.run_name, metrics=metrics, model_dir=model_dir, run_dir=root.display(files.run_dir),
                       tensorboard_dir=files.tensorboard_dir)


def _checkpoint_to_resume(cfg: TrainConfig, root: DataRoot, files, resume: bool) -> CheckpointRef | None:
    """The run's last checkpoint with ``--resume``; without it, the run must be new."""
    from trainers.run_files import TENSORBOARD_DIR

    checkpoint = latest_checkpoint(root, files.run_dir) if resume else None
    if resume and checkpoint is None:
        raise InputError(f"--resume: run {cfg.run_name} has no checkpoint under {root.display(files.run_dir)}")
    if not resume and any(e.base_name != TENSORBOARD_DIR for e in root.list_dir(files.run_dir)):
        raise InputError(f"run {cfg.run_name} already exists under {root.display(files.run_dir)}: pass --resume, "
                         "or choose another run_name")
    return checkpoint


def _worker_plan(cfg: TrainConfig, catalog: Catalog, data: Manifest, backbone: Backbone, files,
                 checkpoint: CheckpointRef | None, stop_after: int | None):
    from trainers.train_loop import WorkerPlan

    num_batches = batches_in(cfg, data)
    total = cfg.total_steps(num_batches)
    return WorkerPlan(backbone_path=backbone.local, backbone_on_root=backbone.on_root, root_uri=catalog.root.uri,
                      data_files=tuple(catalog.files(cfg.data_kind, cfg.data_name, data.version)),
                      num_batches=num_batches, total_steps=total, stop_after=stop_after,
                      resume_from=checkpoint.path if checkpoint else None, files=files,
                      prompts=task_prompts(catalog, data) if cfg.data_kind == "shards" else {},
                      lineage=lineage_of(cfg, data, backbone, total))


def _trainer(cfg: TrainConfig, plan, root: DataRoot):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.train.rendezvous import BoundStoreTorchConfig
    from trainers.train_loop import run_worker

    return TorchTrainer(
        functools.partial(run_worker, cfg, plan),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     placement_strategy=cfg.placement),
        torch_config=BoundStoreTorchConfig(),  # the rendezvous store listens on rank 0's node address only
        # Checkpoints go straight to the data root, object stores included (Ray uploads them).
        run_config=RunConfig(name=cfg.run_name, storage_path=root.path("runs"), storage_filesystem=root.fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                             # A dead worker restarts the group from the last checkpoint; the
                             # loop's seeding makes the restarted run equal an undisturbed one.
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
