"""``quarry sweep-layers --config configs/train/NAME.yaml``: how many layers to keep.

For a training config's backbone and shards, the untrained model's contrastive loss at
every layer over the first ``--batches`` global batches (``trainers.layer_sweep``), with
L3Prune's two cut-offs marked. Set the chosen one as ``keep_layers`` in the config. Runs
in this process, on a GPU when there is one; no Ray.

Tested by tests/pipelines/train/test_train_ray.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow.compute as pc

from pipelines.train.backbone import resolve_backbone
from pipelines.train.launch import check_shards
from storage import Catalog, ConfigError, InputError, format_table
from trainers.config import TrainConfig

log = logging.getLogger("quarry")


@dataclass
class SweepConfig:
    batches: int = 4  # global batches of the shards the loss is averaged over
    device: str | None = None  # default: cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.batches < 1:
            raise ConfigError("batches", f"must be at least 1, got {self.batches}")


@dataclass
class SweepResult:
    run_name: str
    losses: list[float]  # index = layer (0: embeddings)
    large: int | None
    small: int | None
    batches: int

    def summary(self) -> str:
        rows = []
        for layer, loss in enumerate(self.losses):
            mark = {self.large: "<- large (L3Prune)", self.small: "<- small (L3Prune)"}.get(layer, "")
            rows.append([str(layer), f"{loss:.4f}", mark])
        layers = len(self.losses) - 1
        advice = []
        for n, what in ((self.large, "large"), (self.small, "small")):
            if n == layers:
                advice.append(f"{what}: the loss is lowest at the last layer: keep every layer")
            elif n is not None:
                advice.append(f"keep_layers: {n}  # {what}: {n} of {layers} layers, {layers - n} pruned")
        return "\n".join([f"layer sweep of {self.run_name}'s backbone: initial contrastive loss per layer over "
                          f"{self.batches} global batch(es) (layer 0: embeddings)",
                          format_table(["layer", "loss", ""], rows),
                          *(advice or ["no local minimum in either half: keep every layer"])])


def sweep_layers(cfg: TrainConfig, sweep: SweepConfig, catalog: Catalog) -> SweepResult:
    import torch

    from trainers.layer_sweep import cutoffs, layer_losses
    from trainers.model import EmbeddingModel
    from trainers.objectives import step_inputs
    from trainers.shards import global_batch_rows

    if cfg.objective != "contrastive":
        raise InputError(f"sweep-layers scores the contrastive loss on shards; {cfg.run_name} is an "
                         f"{cfg.objective} config")
    if cfg.keep_layers is not None:
        raise InputError("sweep-layers runs on every layer: remove keep_layers from the config first")
    shards = catalog.verify("shards", cfg.shards)
    check_shards(cfg, shards)
    count = min(sweep.batches, shards.config["batches"])
    backbone = resolve_backbone(cfg, catalog)
    device = sweep.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.info("sweep-layers: %s on %s, %d global batch(es) of shards/%s", cfg.init_from or cfg.backbone, device,
             count, cfg.shards)
    model = EmbeddingModel.from_pretrained(backbone.local, pooling="mean", bidirectional=cfg.bidirectional,
                                           attn_implementation=cfg.attn_implementation,
                                           dtype=torch.bfloat16 if cfg.use_bf16 else None, max_length=cfg.max_length,
                                           trust_remote_code=cfg.trust_remote_code).to(device).eval()
    # Only the batches the sweep scores, not the whole shards version.
    table = catalog.read_table("shards", cfg.shards, shards.version, filter=pc.field("batch_index") < count)
    # The export's order: the first batches a run trains on.
    batches = [step_inputs(model, global_batch_rows(table, index), cfg.max_length) for index in range(count)]
    losses = layer_losses(model, batches, cfg.temperature, device)
    cut = cutoffs(losses)
    return SweepResult(cfg.run_name, losses, cut.large, cut.small, count)
