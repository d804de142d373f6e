"""What one training step computes, per ``TrainConfig.objective``: one loop, three objectives.

Each objective builds its model, reads this worker's data for a step and returns the loss.
The loop around them (``trainers.train_loop``) is shared: optimiser, schedule, seeding,
checkpoints, resume, logging and saving the model.

==============  ======================================  ==========================  ==========================
objective       data (per step)                         model                       loss
==============  ======================================  ==========================  ==========================
contrastive     a packed global batch of the shards     ``EmbeddingModel``          InfoNCE, hard + in-batch
mntp            corpus passages (``TextBatches``)       ``MntpModel`` (LM head)     masked next-token CE
simcse          corpus passages, each passed twice      ``EmbeddingModel``, dropout in-batch InfoNCE of views
==============  ======================================  ==========================  ==========================

Matryoshka prefixes (``matryoshka_dims``) apply to the two embedding objectives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from storage import mask_key
from trainers.config import TrainConfig
from trainers.loss import gathered_loss, simcse_loss
from trainers.shards import ShardReader
from trainers.text_batches import RowGroup, TextBatches


@dataclass
class StepOutput:
    loss: torch.Tensor
    examples: int  # texts or queries this worker scored
    tokens: int  # non-padding tokens this worker's forward pass read
    task: str  # what the step trained on: the shards' task, or the objective


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


def compute_loss(model, inputs: StepInputs, temperature: float, device, dims=()) -> torch.Tensor:
    feats = {k: v.to(device) for k, v in inputs.features.items()}
    emb = model(**feats)  # (b + b + b*k, dim)
    b, k = inputs.b, inputs.k
    q, pos, neg = emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, k, emb.shape[-1])  # k may be 0
    return gathered_loss(q, pos, neg, inputs.in_batch, temperature, inputs.pos_keys.to(device),
                         inputs.neg_keys.to(device), inputs.labels.to(device), inputs.neg_labels.to(device), dims)


def build_embedding_model(cfg: TrainConfig, backbone_path: str, dropout: float | None = None):
    """The ``EmbeddingModel`` a contrastive or SimCSE run trains (``dropout``: SimCSE's)."""
    from trainers.model import EmbeddingModel

    return EmbeddingModel.from_pretrained(
        backbone_path, pooling=cfg.pooling, bidirectional=cfg.bidirectional,
        attn_implementation=cfg.attn_implementation, dtype=torch.bfloat16 if cfg.use_bf16 else None,
        max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code, lora=cfg.lora,
        keep_layers=cfg.keep_layers, dropout=dropout)


def _tokens(features: dict) -> int:
    return int(features["attention_mask"].sum())


class Contrastive:
    """NV-Embed's instruction tuning on the packed shards."""

    def __init__(self, cfg: TrainConfig, files: list[str], filesystem, rank: int, world: int, num_batches: int):
        self.cfg = cfg
        self.reader = ShardReader(files, filesystem, rank, num_batches, cfg.seed)

    def build(self, backbone: str):
        model = build_embedding_model(self.cfg, backbone)
        self.dims = self.cfg.matryoshka(model.pooler_dim())
        return model

    def step(self, model, module, step: int, device) -> StepOutput:
        rows = self.reader.batch_for_step(step)
        inputs = step_inputs(module, rows, self.cfg.max_length)
        loss = compute_loss(model, inputs, self.cfg.temperature, device, self.dims)
        return StepOutput(loss, inputs.b, _tokens(inputs.features), rows[0]["task"])

    def before_save(self, module) -> None:
        pass


class _TextObjective:
    def __init__(self, cfg: TrainConfig, groups: list[RowGroup], filesystem, rank: int, world: int):
        self.cfg = cfg
        self.texts = TextBatches(groups, filesystem, rank, world, cfg.global_batch, cfg.seed)


class Mntp(_TextObjective):
    """LLM2Vec's masked next-token prediction on corpus passages."""

    def build(self, backbone: str):
        from trainers.mntp_model import MntpModel

        cfg = self.cfg
        return MntpModel.from_pretrained(backbone, cfg.pooling, cfg.mntp, cfg.attn_implementation,
                                         torch.bfloat16 if cfg.use_bf16 else None, cfg.max_length,
                                         cfg.trust_remote_code, cfg.lora, cfg.keep_layers)

    def step(self, model, module, step: int, device) -> StepOutput:
        texts = self.texts.texts_for_step(step)
        features = module.tokenize(texts, self.cfg.max_length)
        loss = model(**{k: v.to(device) for k, v in features.items()})
        return StepOutput(loss, len(texts), _tokens(features), "mntp")

    def before_save(self, module) -> None:
        pass


class Simcse(_TextObjective):
    """Unsupervised SimCSE: each passage twice through the model, dropout the only difference."""

    def build(self, backbone: str):
        from trainers.model import load_backbone_config, set_dropout
        # The backbone's own dropout, which the saved model keeps (before_save).
        self.own_dropout = set_dropout(load_backbone_config(backbone, self.cfg.trust_remote_code), 0.0)
        model = build_embedding_model(self.cfg, backbone, dropout=self.cfg.simcse.dropout)
        self.dims = self.cfg.matryoshka(model.pooler_dim())
        return model

    def step(self, model, module, step: int, device) -> StepOutput:
        texts = self.texts.texts_for_step(step)
        n = len(texts)
        # Both views in one forward pass (DDP allows one forward per backward); dropout masks
        # are drawn per element, so the two copies of a text see different noise.
        features = module.tokenize(texts + texts, None, self.cfg.max_length)
        emb = model(**{k: v.to(device) for k, v in features.items()})
        keys = torch.tensor([mask_key(t) for t in texts], dtype=torch.long, device=device)
        loss = simcse_loss(emb[:n], emb[n:], self.cfg.temperature, keys, self.dims)
        return StepOutput(loss, n, _tokens(features), "simcse")

    def before_save(self, module) -> None:
        """The saved model keeps the backbone's own dropout, not SimCSE's."""
        base = module._base_config()
        for name, value in self.own_dropout.items():
            setattr(base, name, value)


def objective_for(cfg: TrainConfig, data_files: list[str], filesystem, rank: int, world: int, num_batches: int):
    """The step logic of ``cfg.objective`` for this worker."""
    if cfg.objective == "contrastive":
        return Contrastive(cfg, data_files, filesystem, rank, world, num_batches)
    from trainers.text_batches import row_groups

    groups = row_groups(data_files, filesystem)
    return (Mntp if cfg.objective == "mntp" else Simcse)(cfg, groups, filesystem, rank, world)
