"""The per-worker training loop that Ray Train runs (``TorchTrainer``): ``run_worker(cfg, plan)``.

The driver (``pipelines.train``) hands every worker the run's ``TrainConfig`` and a
``WorkerPlan``: what the driver resolved (the backbone folder, the shard files, the step
count, where outputs go), so the worker re-derives nothing.

Each worker reads its own rows of each packed global batch (``worker == rank``) straight
from the Parquet shards, one batch at a time. Step s of the run uses global batch
``order(epoch)[s % batches]`` with a permutation keyed on (seed, epoch), and dropout is
seeded from (seed, step, rank), so a resumed run sees the same data and the same noise as
an uninterrupted one. Queries, positives and negatives go through the model in one
forward pass (DDP allows one forward per backward).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pds
import torch

from storage import stable_seed
from trainers.config import TrainConfig
from trainers.loss import gathered_loss
from trainers.lineage import Lineage
from trainers.run_files import RunFiles

STATE_FILE = "state.pt"
CHECKPOINT_METRICS = "metrics.json"  # beside the state: its step is read without loading tensors


@dataclass(frozen=True)
class WorkerPlan:
    """What the driver resolved for a run, the same for every worker."""

    backbone_path: str  # a local folder (or hub id) the model loads from
    backbone_on_root: str | None  # a model on an object-store root: each worker fetches it instead
    root_uri: str  # the data root holding the shards
    shard_files: tuple[str, ...]  # the shards version's Parquet files
    num_batches: int  # global batches in the shards
    total_steps: int  # the schedule's length (TrainConfig.total_steps)
    stop_after: int | None  # end after this step with a checkpoint (--stop-after)
    resume_from: str | None  # checkpoint folder (inside the root) to continue from (--resume)
    files: RunFiles  # metrics.jsonl, TensorBoard (rank 0) and the final model
    prompts: dict[str, str] = field(default_factory=dict)  # saved with the model (EmbeddingModelConfig.prompts)
    lineage: Lineage | None = None  # lineage.json, saved with the model


def _seed(*parts) -> int:
    # 4 bytes, as every run so far was seeded: a wider seed would change their noise.
    return stable_seed(*parts, nbytes=4)


def batch_order(num_batches: int, epoch: int, seed: int) -> np.ndarray:
    if epoch == 0:
        return np.arange(num_batches)  # the export already shuffled them
    return np.random.default_rng(_seed(seed, "epoch", epoch)).permutation(num_batches)


def load_state(checkpoint_dir: str) -> dict:
    """A checkpoint's state: tensors, numbers and lists only, so no pickled code runs."""
    return torch.load(os.path.join(checkpoint_dir, STATE_FILE), map_location="cpu", weights_only=True)


class ShardReader:
    """This worker's rows of one global batch at a time, read from Parquet on demand."""

    def __init__(self, files: list[str], filesystem, rank: int, num_batches: int, seed: int):
        self.dataset = pds.dataset(files, filesystem=filesystem, format="parquet")
        self.rank, self.num_batches, self.seed = rank, num_batches, seed

    def batch_for_step(self, step: int) -> list[dict]:
        epoch, i = divmod(step, self.num_batches)
        index = int(batch_order(self.num_batches, epoch, self.seed)[i])
        table = self.dataset.to_table(filter=(pc.field("batch_index") == index) & (pc.field("worker") == self.rank))
        return sorted(table.to_pylist(), key=lambda r: r["position"])


@dataclass
class StepInputs:
    features: dict
    b: int
    k: int
    in_batch: bool
    pos_keys: torch.Tensor
    neg_keys: torch.Tensor
    labels: torch.Tensor
    neg_labels: torch.Tensor


def step_inputs(model, rows: list[dict], max_length: int) -> StepInputs:
    """One tokenized batch: queries (with instruction), positives, then negatives, flattened."""
    b, k = len(rows), len(rows[0]["negatives"])
    texts = [r["query"] for r in rows] + [r["positive"] for r in rows] + [n for r in rows for n in r["negatives"]]
    instructions = [r["instruction"] or "" for r in rows] + [""] * (b + b * k)  # documents get none
    features = model.tokenize(texts, instructions, max_length)
    return StepInputs(
        features=features, b=b, k=k, in_batch=bool(rows[0]["in_batch"]),
        # dtype given: with no hard negatives the lists are empty, and torch would make them float.
        pos_keys=torch.tensor([r["pos_key"] for r in rows], dtype=torch.long),
        neg_keys=torch.tensor([r["neg_keys"] for r in rows], dtype=torch.long),
        labels=torch.tensor([r["label_id"] for r in rows], dtype=torch.long),
        neg_labels=torch.tensor([r["neg_label_ids"] for r in rows], dtype=torch.long))


def compute_loss(model, inputs: StepInputs, temperature: float, device) -> torch.Tensor:
    feats = {k: v.to(device) for k, v in inputs.features.items()}
    emb = model(**feats)  # (b + b + b*k, dim)
    b, k = inputs.b, inputs.k
    q, pos, neg = emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, k, emb.shape[-1])  # k may be 0
    return gathered_loss(q, pos, neg, inputs.in_batch, temperature, inputs.pos_keys.to(device),
                         inputs.neg_keys.to(device), inputs.labels.to(device), inputs.neg_labels.to(device))


def build_model(cfg: TrainConfig, backbone_path: str):
    from trainers.model import EmbeddingModel

    model = EmbeddingModel.from_pretrained(
        backbone_path, pooling=cfg.pooling, bidirectional=cfg.bidirectional,
        attn_implementation=cfg.attn_implementation, dtype=torch.bfloat16 if cfg.use_bf16 else None,
        max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code, lora=cfg.lora)
    if cfg.gradient_checkpointing:
        base = model.backbone
        enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
        enable()
    return model


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
    torch.manual_seed(cfg.seed)  # identical initial pooling head on every worker
    model = build_model(cfg, backbone)
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
    reader = ShardReader(list(plan.shard_files), root.fs, rank, plan.num_batches, cfg.seed)
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
        rows = reader.batch_for_step(step)
        inputs = step_inputs(module, rows, cfg.max_length)
        loss = compute_loss(model, inputs, cfg.temperature, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        mean_loss = loss.detach().clone()
        tokens = torch.tensor(float(inputs.features["attention_mask"].sum()))
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(mean_loss)
            torch.distributed.all_reduce(tokens)
            mean_loss /= world
        seconds = time.perf_counter() - t0
        metrics = {"step": step + 1, "loss": float(mean_loss), "lr": scheduler.get_last_lr()[0],
                   "task": rows[0]["task"], "examples_per_s": inputs.b * world / seconds,
                   "tokens_per_s": float(tokens) / seconds}
        if rank == 0:
            if writer:
                for key in ("loss", "lr", "examples_per_s", "tokens_per_s"):
                    writer.add_scalar(f"train/{key}", metrics[key], step + 1)
            with open(plan.files.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
        last = step + 1 == total
        if (step + 1) % cfg.checkpoint_every == 0 or last or step + 1 == stop:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    trainable_state = {n: p.detach().cpu() for n, p in module.named_parameters() if p.requires_grad}
                    torch.save({"trainable": trainable_state, "optimizer": optimizer.state_dict(),
                                "scheduler": scheduler.state_dict(), "step": step + 1}, os.path.join(d, STATE_FILE))
                    with open(os.path.join(d, CHECKPOINT_METRICS), "w") as f:
                        json.dump(metrics, f)
                if last and rank == 0:
                    module.config.prompts = dict(plan.prompts)
                    module.config.max_length = cfg.saved_max_length  # training is over: set what it encodes with
                    plan.files.save_model(module, plan.lineage)
                if writer:
                    writer.flush()
                    plan.files.sync()  # the logs up to this checkpoint, beside it
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
        else:
            ray.train.report(metrics)
    if writer:
        writer.close()
