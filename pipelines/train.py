"""``quarry train --config configs/train/NAME.yaml [--resume]``: NV-Embed contrastive training
on Ray Train (``TorchTrainer``, DDP by default, FSDP as an option).

Checkpoints (trainable weights: LoRA + pooling head; optimizer; scheduler; step) go to
``<root>/runs/<run_name>`` through Ray Train; TensorBoard logs to
``<root>/runs/<run_name>/tb``; the final model to ``<root>/models/<run_name>``.
"""

from __future__ import annotations

import logging
import os
import posixpath

import yaml

from pipelines.ray_runtime import ensure_ray
from storage import Catalog, InputError
from trainers.config import TrainConfig

log = logging.getLogger("quarry")


def load_train_config(path: str, overrides: dict | None = None) -> TrainConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: no such training config") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of training settings")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(raw, where=os.path.basename(path))


def resolve_backbone(cfg: TrainConfig, catalog: Catalog) -> str:
    """A local folder for the backbone: the packaged MiniLM, a tiny decoder built on demand,
    a stage-1 model (``init_from``), or the path / hub id as given."""
    if cfg.init_from:
        path = cfg.init_from if os.path.isdir(cfg.init_from) else catalog.root.path("models", cfg.init_from)
        if not os.path.isdir(path):
            raise InputError(f"init_from: no saved model at {cfg.init_from} (nor {path})")
        return path
    if cfg.backbone.startswith("packaged:"):
        from miners.teacher import resolve_teacher_path

        return resolve_teacher_path(cfg.backbone)
    if cfg.backbone.startswith("tiny:"):
        from pipelines.sources import load_embedded_table
        from trainers.tiny import build_tiny_decoder

        family = cfg.backbone.split(":", 1)[1]
        if not catalog.root.is_local:
            raise InputError("tiny decoders are built on a local data root")
        texts = load_embedded_table("en", 400).column("extract").to_pylist()
        return build_tiny_decoder(family, catalog.root.path("models", f"_tiny-{family}"), texts, seed=cfg.seed)
    return cfg.backbone


def latest_checkpoint(run_dir: str):
    """The checkpoint with the highest step under a run folder, or None."""
    import torch
    from ray.train import Checkpoint

    from trainers.train_loop import STATE_FILE

    best, best_step = None, -1
    if not os.path.isdir(run_dir):
        return None
    for entry in os.listdir(run_dir):
        state = os.path.join(run_dir, entry, STATE_FILE)
        if os.path.isfile(state):
            step = torch.load(state, map_location="cpu", weights_only=False)["step"]
            if step > best_step:
                best, best_step = os.path.join(run_dir, entry), step
    return Checkpoint.from_directory(best) if best else None


def train(cfg: TrainConfig, catalog: Catalog, resume: bool = False, stop_after: int | None = None) -> dict:
    """Train (or resume) ``cfg.run_name``. ``stop_after``: end after that many steps, on the
    schedule of the full run, with a checkpoint; ``--resume`` continues from it."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainers.train_loop import train_loop_per_worker

    if not catalog.root.is_local:
        raise InputError("training writes checkpoints and the model under a local data root for now")
    shards = catalog.manifest("shards", cfg.shards)
    if shards.config.get("workers") != cfg.num_workers:
        raise InputError(f"shards/{cfg.shards} were packed for {shards.config.get('workers')} workers, "
                         f"the config asks for {cfg.num_workers}: export again with --workers {cfg.num_workers}")
    num_batches = shards.config["batches"]
    total = cfg.max_steps or cfg.epochs * num_batches
    runs = catalog.root.path("runs")
    run_dir = posixpath.join(runs, cfg.run_name)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise InputError(f"--resume: run {cfg.run_name} has no checkpoint under {run_dir}")
    if not resume and os.path.isdir(run_dir) and any(e != "tb" for e in os.listdir(run_dir)):
        raise InputError(f"run {cfg.run_name} already exists under {run_dir}: pass --resume, or choose another "
                         "run_name")
    os.makedirs(run_dir, exist_ok=True)
    ensure_ray()
    backbone = resolve_backbone(cfg, catalog)
    model_dir = catalog.root.path("models", cfg.run_name)
    loop_config = {"train": cfg.to_dict(), "backbone_path": backbone, "root": catalog.root.uri,
                   "files": catalog.files("shards", cfg.shards, shards.version), "num_batches": num_batches,
                   "total_steps": total, "model_dir": model_dir,
                   "tensorboard_dir": posixpath.join(run_dir, "tb"), "stop_after": stop_after,
                   "metrics_path": posixpath.join(run_dir, "metrics.jsonl"),
                   "resume_from": checkpoint.path if checkpoint else None}
    log.info("train: %s on %d %s worker(s), %d steps over %d global batches of shards/%s %s%s",
             cfg.run_name, cfg.num_workers, "GPU" if cfg.use_gpu else "CPU", total, num_batches, cfg.shards,
             shards.version, f", resuming from step {_step_of(checkpoint)}" if checkpoint else "")
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name=cfg.run_name, storage_path=runs,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)))
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    log.info("train: done at step %s, loss %.4f; model saved to %s", metrics.get("step"), metrics.get("loss", float("nan")),
             model_dir)
    return {"metrics": metrics, "model_dir": model_dir, "run_dir": run_dir}


def run_state(cfg: TrainConfig, catalog: Catalog) -> tuple[int | None, int]:
    """(last checkpointed step or None, total steps) of ``cfg.run_name``."""
    shards = catalog.manifest("shards", cfg.shards)
    total = cfg.max_steps or cfg.epochs * shards.config["batches"]
    checkpoint = latest_checkpoint(catalog.root.path("runs", cfg.run_name))
    return (_step_of(checkpoint) if checkpoint else None), total


def _step_of(checkpoint) -> int:
    import torch

    from trainers.train_loop import STATE_FILE

    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)["step"]
