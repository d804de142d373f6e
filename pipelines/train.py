"""``quarry train --config configs/train/NAME.yaml [--resume]``: NV-Embed contrastive training
on Ray Train (``TorchTrainer``, DDP by default, FSDP as an option).

The driver resolves everything a worker needs (backbone folder, shard files, step count,
output paths) into a ``WorkerPlan`` and hands each worker ``run_worker(cfg, plan)``.
Checkpoints (trainable weights: LoRA + pooling head; optimizer; scheduler; step) go to
``<root>/runs/<run_name>`` through Ray Train; TensorBoard logs to
``<root>/runs/<run_name>/tb``; the final model to ``<root>/models/<run_name>``.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import shutil
from dataclasses import dataclass

import yaml

from pipelines.ray_runtime import ensure_ray
from storage import Catalog, InputError, Manifest, first_line, resolve_packaged
from storage.packaged import is_packaged
from trainers.config import TrainConfig

log = logging.getLogger("quarry")

TINY_PREFIX = "tiny:"


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


def resolve_backbone(cfg: TrainConfig, catalog: Catalog) -> str:
    """A local folder for the backbone: a stage-1 model (``init_from``), the packaged MiniLM,
    a tiny decoder built on demand, or the path / hub id as given."""
    if cfg.init_from:
        path = cfg.init_from if os.path.isdir(cfg.init_from) else catalog.root.path("models", cfg.init_from)
        if not os.path.isdir(path):
            raise InputError(f"init_from: no saved model at {cfg.init_from} (nor {path})")
        return path
    if is_packaged(cfg.backbone):
        return resolve_packaged(cfg.backbone)
    if cfg.backbone.startswith(TINY_PREFIX):
        from pipelines.sources import load_embedded_table
        from trainers.tiny import FAMILIES, build_tiny_decoder

        family = cfg.backbone[len(TINY_PREFIX):]
        if family not in FAMILIES:
            raise InputError(f"backbone {cfg.backbone}: tiny decoders are {', '.join(TINY_PREFIX + f for f in FAMILIES)}")
        if not catalog.root.is_local:
            raise InputError("tiny decoders are built on a local data root")
        texts = load_embedded_table("en", 400).column("extract").to_pylist()
        return build_tiny_decoder(family, catalog.root.path("models", f"_tiny-{family}"), texts, seed=cfg.seed)
    return cfg.backbone


def latest_checkpoint(run_dir: str):
    """The checkpoint with the highest step under a run folder, or None."""
    from ray.train import Checkpoint

    from trainers.train_loop import STATE_FILE, load_state

    best, best_step = None, -1
    if not os.path.isdir(run_dir):
        return None
    for entry in os.listdir(run_dir):
        folder = os.path.join(run_dir, entry)
        if os.path.isfile(os.path.join(folder, STATE_FILE)):
            step = load_state(folder)["step"]
            if step > best_step:
                best, best_step = folder, step
    return Checkpoint.from_directory(best) if best else None


@dataclass
class RunState:
    done: int | None  # last checkpointed step, None: no checkpoint
    total: int  # the schedule's length

    @property
    def finished(self) -> bool:
        return self.done is not None and self.done >= self.total


def run_state(cfg: TrainConfig, catalog: Catalog) -> RunState:
    shards = catalog.manifest("shards", cfg.shards)
    checkpoint = latest_checkpoint(catalog.root.path("runs", cfg.run_name))
    return RunState(done=_step_of(checkpoint) if checkpoint else None, total=cfg.total_steps(shards.config["batches"]))


def discard_uncheckpointed_run(cfg: TrainConfig, catalog: Catalog) -> bool:
    """Remove the folder of a run that died before its first checkpoint (it holds only logs).

    Returns whether there was one. A run with a checkpoint is never touched.
    """
    run_dir = catalog.root.path("runs", cfg.run_name)
    if not os.path.isdir(run_dir) or latest_checkpoint(run_dir) is not None:
        return False
    log.info("train: %s has no checkpoint; starting it again", run_dir)
    shutil.rmtree(run_dir)
    return True


@dataclass
class TrainResult:
    run_name: str
    metrics: dict  # the last step's: step, loss, lr, task, examples_per_s, tokens_per_s
    model_dir: str
    run_dir: str

    def summary(self) -> str:
        return (f"trained {self.run_name}: step {self.metrics.get('step')}, loss "
                f"{self.metrics.get('loss', float('nan')):.4f}; model in {self.model_dir}; "
                f"TensorBoard: tensorboard --logdir {self.run_dir}/tb")


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
            prompts.setdefault(f"{task}-query" if task_type == "retrieval" else task, instruction)
    return prompts


def train(cfg: TrainConfig, catalog: Catalog, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) ``cfg.run_name``. ``stop_after``: end after that many steps, on the
    schedule of the full run, with a checkpoint; ``--resume`` continues from it."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainers.model import load_backbone_config
    from trainers.train_loop import WorkerPlan, run_worker

    if stop_after is not None and stop_after < 1:
        raise InputError(f"--stop-after must be at least 1, got {stop_after}")
    if not catalog.root.is_local:
        raise InputError("training writes checkpoints and the model under a local data root for now")
    # Every shard file against the sha256 its manifest recorded: a damaged file stops here,
    # in one line, not as a parse error in a worker (or, worse, as silently different data).
    shards = catalog.verify("shards", cfg.shards)
    check_shards(cfg, shards)
    num_batches = shards.config["batches"]
    total = cfg.total_steps(num_batches)
    runs = catalog.root.path("runs")
    run_dir = posixpath.join(runs, cfg.run_name)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise InputError(f"--resume: run {cfg.run_name} has no checkpoint under {run_dir}")
    if not resume and os.path.isdir(run_dir) and any(e != "tb" for e in os.listdir(run_dir)):
        raise InputError(f"run {cfg.run_name} already exists under {run_dir}: pass --resume, or choose another "
                         "run_name")
    backbone = resolve_backbone(cfg, catalog)
    load_backbone_config(backbone, cfg.trust_remote_code)  # a bad backbone is one line here, not a worker crash
    os.makedirs(run_dir, exist_ok=True)
    ensure_ray()
    model_dir = catalog.root.path("models", cfg.run_name)
    plan = WorkerPlan(backbone_path=backbone, root_uri=catalog.root.uri,
                      shard_files=tuple(catalog.files("shards", cfg.shards, shards.version)), num_batches=num_batches,
                      total_steps=total, stop_after=stop_after, resume_from=checkpoint.path if checkpoint else None,
                      model_dir=model_dir, tensorboard_dir=posixpath.join(run_dir, "tb"),
                      metrics_path=posixpath.join(run_dir, "metrics.jsonl"), prompts=task_prompts(catalog, shards))
    log.info("train: %s on %d %s worker(s), %d steps over %d global batches of shards/%s %s%s",
             cfg.run_name, cfg.num_workers, "GPU" if cfg.use_gpu else "CPU", total, num_batches, cfg.shards,
             shards.version, f", resuming from step {_step_of(checkpoint)}" if checkpoint else "")
    trainer = TorchTrainer(
        functools.partial(run_worker, cfg, plan),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     placement_strategy=cfg.placement),
        run_config=RunConfig(name=cfg.run_name, storage_path=runs,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                             # A dead worker restarts the group from the last checkpoint; the
                             # loop's seeding makes the restarted run equal an undisturbed one.
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    log.info("train: done at step %s, loss %.4f; model saved to %s", metrics.get("step"), metrics.get("loss", float("nan")),
             model_dir)
    return TrainResult(run_name=cfg.run_name, metrics=metrics, model_dir=model_dir, run_dir=run_dir)


def _step_of(checkpoint) -> int:
    from trainers.train_loop import load_state

    with checkpoint.as_directory() as d:
        return load_state(d)["step"]
