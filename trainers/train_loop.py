"""The per-worker training loop that Ray Train runs (``TorchTrainer``): ``run_worker(cfg, plan)``.

The driver (``pipelines.train``) hands every worker the run's ``TrainConfig`` and a
``WorkerPlan``: what the driver resolved (the backbone folder, the shard files, the step
count, where outputs go), so the worker re-derives nothing.

What a step reads and computes is the objective's (``trainers.objectives``: contrastive
on packed shards, MNTP or SimCSE on corpus passages); this loop is the same for all three.
Each worker reads only its own share of a step's data, one step at a time. The data of
step s is a function of (seed, s, rank), and dropout (and MNTP's masking) is seeded from
(seed, step, rank), so a resumed run sees the same data and the same noise as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import torch

from storage import stable_seed
from trainers.config import TrainConfig
from trainers.lineage import Lineage
from trainers.objectives import objective_for
from trainers.run_files import RunFiles

STATE_FILE = "state.pt"
CHECKPOINT_METRICS = "metrics.json"  # beside the state: its step is read without loading tensors


@dataclass(frozen=True)
class WorkerPlan:
    """What the driver resolved for a run, the same for every worker."""

    backbone_path: str  # a local folder (or hub id) the model loads from
    backbone_on_root: str | None  # a model on an object-store root: each worker fetches it instead
    root_uri: str  # the data root holding the shards
    data_files: tuple[str, ...]  # the Parquet files of the shards (contrastive) or corpus (mntp, simcse)
    num_batches: int  # global batches in the shards; for a corpus, per epoch
    total_steps: int  # the schedule's length (TrainConfig.total_steps)
    stop_after: int | None  # end after this step with a checkpoint (--stop-after)
    resume_from: str | None  # checkpoint folder (inside the root) to continue from (--resume)
    files: RunFiles  # metrics.jsonl, TensorBoard (rank 0) and the final model
    prompts: dict[str, str] = field(default_factory=dict)  # saved with the model (EmbeddingModelConfig.prompts)
    lineage: Lineage | None = None  # lineage.json, saved with the model


def _seed(*parts) -> int:
    # 4 bytes, as every run so far was seeded: a wider seed would change their noise.
    return stable_seed(*parts, nbytes=4)


def load_state(checkpoint_dir: str) -> dict:
    """A checkpoint's state: tensors, numbers and lists only, so no pickled code runs."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


def enable_gradient_checkpointing(model) -> None:
    base = model.lm if hasattr(model, "lm") else model.backbone
    enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    enable()


def run_worker(cfg: TrainConfig, plan: WorkerPlan) -> None:
    import ray.train
    import ray.train.torch
    from transformers import get_linear_schedule_with_warmup

    from storage import DataRoot
    from storage.published import fetch_dir

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    root = DataRoot.resolve(plan.root_uri)
    backbone = fetch_dir(root, plan.backbone_on_root) if plan.backbone_on_root else plan.backbone_path
    objective = objective_for(cfg, list(plan.data_files), root.fs, rank, world, plan.num_batches)
    torch.manual_seed(cfg.seed)  # identical initial pooling head (and any new weights) on every worker
    model = objective.build(backbone)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    module = model
    model = ray.train.torch.prepare_model(model, parallel_strategy=cfg.strategy)
    device = ray.train.torch.get_device()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = plan.total_steps
    scheduler = get_linear_schedule_with_warmup(optimizer, min(cfg.warmup_steps, total), total)
    start = 0
    # Ray's own restarts after a worker failure hand the checkpoint over here; `--resume`
    # passes the run's last checkpoint in the config (Ray Train V2's recommended pattern).
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and plan.resume_from:
        checkpoint = ray.train.Checkpoint(plan.resume_from, filesystem=root.fs)
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = load_state(d)
        module.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        # A restart (Ray's after a failure, or --resume) repeats the steps after the last
        # checkpoint: drop what the lost attempt logged for them, so each step has one row.
        plan.files.start(start)
        writer = SummaryWriter(plan.files.tensorboard_dir, purge_step=start + 1)
    stop = min(total, plan.stop_after or total)
    model.train()
    for step in range(start, stop):
        t0 = time.perf_counter()
        torch.manual_seed(_seed(cfg.seed, "step", step, rank))  # dropout noise independent of resumption
        out = objective.step(model, module, step, device)
        loss = out.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        mean_loss = loss.detach().clone()
        tokens = torch.tensor(float(out.tokens))
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean_loss)
            torch.distributed.all_reduce(tokens)
            mean_loss /= world
        seconds = time.perf_counter() - t0
        metrics = {"step": step + 1, "loss": float(mean_loss), "lr": scheduler.get_last_lr()[0],
                   "task": out.task, "examples_per_s": out.examples * world / seconds,
                   "tokens_per_s": float(tokens) / seconds}
        if rank == 0:
            if writer:
                for key in ("loss", "lr", "examples_per_s", "tokens_per_s"):
                    writer.add_scalar(f"train/{key}", metrics[key], step + 1)
            with open(plan.files.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        last = step + 1 == total
        # Ray Train hears of checkpoints only; every step's metrics are in metrics.jsonl and
        # TensorBoard above. A report waits in a one-slot queue that Ray Train 2.60's
        # controller empties once per poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s), so a
        # report per step held every step to about that: on 2 CPU workers the tiny decoder's
        # steps took 1.7 s of wall time for 0.15 s of compute (docs/benchmarks.md).
        if (step + 1) % cfg.checkpoint_every == 0 or last or step + 1 == stop:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    trainable_state = {n: p.detach().cpu() for n, p in module.named_parameters() if p.requires_grad}
                    torch.save({"trainable": trainable_state, "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "step": step + 1}, os.path.join(d, STATE_FILE))
                    with open(os.path.join(d, CHECKPOINT_METRICS), "w") as f:
                        json.dump(metrics, f)
                if last and rank == 0:
                    objective.before_save(module)
                    module.config.prompts = dict(plan.prompts)
                    module.config.max_length = cfg.saved_max_length  # training is over: set what it encodes with
                    plan.files.save_model(module, plan.lineage)
                if writer:
                    writer.flush()
                    plan.files.sync()  # the logs up to this checkpoint, beside it
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
    if writer:
        writer.close()
