"""L3Prune's layer criterion: the untrained model's contrastive loss at every layer.

"Large Language Models Are Overparameterized Text Encoders" (arXiv 2410.14578) prunes
the top layers of a decoder before contrastive training, and chooses how many to keep
from the model's loss *at initialisation*, computed on each layer's mean-pooled hidden
states: the curve has two useful minima, a large variant and a small one.

``layer_losses`` computes the curve: layer 0 is the embedding output, layer l the output
of transformer layer l as transformers returns it (the last one after the final norm).
``cutoffs`` reads the two minima off it. Both are plain functions over tensors and lists
(tests/trainers/test_layer_sweep.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.loss import loss_from_embeddings
from trainers.pooling import masked_mean


@dataclass(frozen=True)
class Cutoffs:
    large: int | None  # keep this many layers: the lowest minimum in the upper half of the curve
    small: int | None  # the lowest minimum in the lower half


def pooled_per_layer(backbone, features: dict) -> torch.Tensor:
    """(layers + 1, batch, hidden): each layer's hidden states mean-pooled over the text's
    tokens (``embed_mask``) and L2-normalised. Row 0 is the embedding output."""
    out = backbone(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                   output_hidden_states=True)
    return torch.stack([F.normalize(masked_mean(h.float(), features["embed_mask"]), dim=-1)
                        for h in out.hidden_states])


@torch.inference_mode()
def layer_losses(model, batches, temperature: float, device="cpu") -> list[float]:
    """Mean contrastive loss per layer (0 = embeddings) over ``batches``: each an
    ``objectives.StepInputs`` of one global batch (queries, positives, negatives)."""
    totals = None
    for inputs in batches:
        feats = {k: v.to(device) for k, v in inputs.features.items()}
        pooled = pooled_per_layer(model.backbone, feats)  # (L + 1, b + b + b*k, d)
        b, k = inputs.b, inputs.k
        losses = []
        for emb in pooled:
            q, pos, neg = emb[:b], emb[b:2 * b], emb[2 * b:].reshape(b, k, emb.shape[-1])
            losses.append(float(loss_from_embeddings(
                q, pos, neg, temperature, inputs.in_batch, inputs.pos_keys.to(device), inputs.neg_keys.to(device),
                inputs.labels.to(device), inputs.neg_labels.to(device))))
        totals = losses if totals is None else [t + x for t, x in zip(totals, losses)]
    if totals is None:
        raise ValueError("no batches to compute the layer losses on")
    return [t / len(batches) for t in totals]


def local_minima(values: list[float], start: int = 1) -> list[int]:
    """Indices from ``start`` on whose value is below both neighbours (an end needs only
    its one neighbour)."""
    out = []
    for i in range(start, len(values)):
        left = values[i - 1] if i > start else float("inf")
        right = values[i + 1] if i + 1 < len(values) else float("inf")
        if values[i] < left and values[i] < right:
            out.append(i)
    return out


def cutoffs(losses: list[float]) -> Cutoffs:
    """The two cut-offs L3Prune proposes, as layer counts to keep, from ``layer_losses``.

    Our reading of the paper: among the curve's local minima (layers 1..L), the large
    variant is the lowest one in the upper half of the layers and the small variant the
    lowest one in the lower half; either is None when that half has no minimum.
    """
    layers = len(losses) - 1
    minima = local_minima(losses)
    upper = [i for i in minima if i > layers / 2]
    lower = [i for i in minima if i <= layers / 2]
    pick = lambda idx: min(idx, key=lambda i: losses[i]) if idx else None  # noqa: E731
    return Cutoffs(large=pick(upper), small=pick(lower))
