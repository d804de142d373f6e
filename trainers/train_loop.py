"""The per-worker training loop that Ray Train runs (``TorchTrainer``): ``run_worker(cfg, plan)``.

The driver (``pipelines.train.launch``) hands every worker the run's ``TrainConfig`` and a
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
    # 4 bytes: a wider seed would change the noise of every run trained so far, and with it
    # the models a resumed or repeated run must reproduce.
    return stable_seed(*parts, nbytes=4)


def load_state(checkpoint_dir: str) -> dict:
    """A checkpoint's state: tensors, numbers and lists only, so no pickled code runs."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


def enable_gradient_checkpointing(model) -> None:
    base = model.lm if hasattr(model, "lm") else model.backbone
    enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
    enable()


@dataclass
class _Worker:
    """One worker's run, set up in named steps; ``run_worker`` then loops over the steps."""

    cfg: TrainConfig
    plan: WorkerPlan
    rank: int
    world: int
    root: object  # storage.DataRoot of the run
    objective: object
    model: torch.nn.Module  # as Ray Train prepared it (DDP or FSDP around ``module``)
    module: torch.nn.Module  # the model itself: what is checkpointed and saved
    device: torch.device
    trainable: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    writer: object | None = None  # rank 0's TensorBoard writer


def _setup(cfg: TrainConfig, plan: WorkerPlan) -> _Worker:
    """Model, optimiser and schedule of this worker (the same initial weights on every one)."""
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
    module = objective.build(backbone)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(module)
    model = ray.train.torch.prepare_model(module, parallel_strategy=cfg.strategy)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(cfg.warmup_steps, plan.total_steps), plan.total_steps)
    return _Worker(cfg, plan, rank, world, root, objective, model, module, ray.train.torch.get_device(), trainable,
                   optimizer, scheduler)


def _restore(w: _Worker) -> int:
    """The step to start from: a checkpoint's (Ray's own restart after a worker failure
    hands it over; ``--resume`` passes the run's last one in the plan, Ray Train V2's
    recommended pattern), else 0."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and w.plan.resume_from:
        checkpoint = ray.train.Checkpoint(w.plan.resume_from, filesystem=w.root.fs)
    if not checkpoint:
        return 0
    with checkpoint.as_directory() as d:
        state = load_state(d)
    w.module.load_state_dict(state["trainable"], strict=False)
    w.optimizer.load_state_dict(state["optimizer"])
    w.scheduler.load_state_dict(state["scheduler"])
    return state["step"]


def _open_logs(w: _Worker, start: int) -> None:
    """Rank 0 logs. A restart (Ray's after a failure, or --resume) repeats the steps after
    the last checkpoint: what the lost attempt logged for them is dropped, so each step has
    one row."""
    if w.rank != 0:
        return
    from torch.utils.tensorboard import SummaryWriter

    w.plan.files.start(start)
    w.writer = SummaryWriter(w.plan.files.tensorboard_dir, purge_step=start + 1)


def _train_step(w: _Worker, step: int) -> dict:
    """One optimiser step; returns its metrics, the loss averaged over the workers."""
    t0 = time.perf_counter()
    torch.manual_seed(_seed(w.cfg.seed, "step", step, w.rank))  # dropout noise independent of resumption
    out = w.objective.step(w.model, w.module, step, w.device)
    w.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if w.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(w.trainable, w.cfg.grad_clip)
    w.optimizer.step()
    w.scheduler.step()
    mean_loss = out.loss.detach().clone()
    tokens = torch.tensor(float(out.tokens))
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(mean_loss)
        torch.distributed.all_reduce(tokens)
        mean_loss /= w.world
    seconds = time.perf_counter() - t0
    return {"step": step + 1, "loss": float(mean_loss), "lr": w.scheduler.get_last_lr()[0], "task": out.task,
            "examples_per_s": out.examples * w.world / seconds, "tokens_per_s": float(tokens) / seconds}


def _log(w: _Worker, metrics: dict) -> None:
    if w.rank != 0:
        return
    for key in ("loss", "lr", "examples_per_s", "tokens_per_s"):
        w.writer.add_scalar(f"train/{key}", metrics[key], metrics["step"])
    with open(w.plan.files.metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")


def _checkpoint(w: _Worker, metrics: dict, last: bool) -> None:
    """Report a checkpoint to Ray Train (rank 0 writes it); at the last step, save the model."""
    import ray.train

    step = metrics["step"]
    with tempfile.TemporaryDirectory() as d:
        if w.rank == 0:
            trainable_state = {n: p.detach().cpu() for n, p in w.module.named_parameters() if p.requires_grad}
            torch.save({"trainable": trainable_state, "optimizer": w.optimizer.state_dict(),
                        "scheduler": w.scheduler.state_dict(), "step": step}, os.path.join(d, STATE_FILE))
            with open(os.path.join(d, CHECKPOINT_METRICS), "w") as f:
                json.dump(metrics, f)
        if last and w.rank == 0:
            _save_final(w)
        if w.writer:
            w.writer.flush()
            w.plan.files.sync()  # the logs up to this checkpoint, beside it
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if w.rank == 0 else None)


def _save_final(w: _Worker) -> None:
    w.objective.before_save(w.module)
    w.module.config.prompts = dict(w.plan.prompts)
    w.module.config.max_length = w.cfg.saved_max_length  # training is over: set what it encodes with
    w.plan.files.save_model(w.module, w.plan.lineage)


def run_worker(cfg: TrainConfig, plan: WorkerPlan) -> None:
    w = _setup(cfg, plan)
    start = _restore(w)
    _open_logs(w, start)
    total = plan.total_steps
    if start >= total and w.rank == 0:
        _save_final(w)  # stopped between its last checkpoint and the save: the checkpoint is the end
    stop = min(total, plan.stop_after or total)
    w.model.train()
    for step in range(start, stop):
        metrics = _train_step(w, step)
        _log(w, metrics)
        last = step + 1 == total
        # Ray Train hears of checkpoints only; every step's metrics are in metrics.jsonl and
        # TensorBoard above. A report waits in a one-slot queue that Ray Train 2.60's
        # controller empties once per poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s), so a
        # report per step held every step to about that: on 2 CPU workers the tiny decoder's
        # steps took 1.7 s of wall time for 0.15 s of compute (docs/benchmarks.md).
        if (step + 1) % cfg.checkpoint_every == 0 or last or step + 1 == stop:
            _checkpoint(w, metrics, last)
    if w.writer:
        w.writer.close()
