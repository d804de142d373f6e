"""Pooling heads: hidden states (batch, seq, hidden) + embed mask -> one vector per text.

``embed_mask`` is 1 on the tokens that make up the text and 0 on padding and on the
instruction, which the model attends to but which never enters the pooled vector
(NV-Embed, LLM2Vec; trainers/tokenization.py says which tokens count as the text). Every
head returns L2-normalised float vectors.

Weighted mean weighs the pooled tokens by position (LLM2Vec), in one of two ways:
``positional`` (sentence-transformers' ``weightedmean``, which Quarry's default convention
follows) weighs a token by its position counted from the first non-pad token, 1-based, the
instruction's positions included in the count; the legacy way counts 1, 2, ... over the
pooled tokens only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import POOLING_MODES, PoolingConfig
from trainers.latent_attention import LatentAttention, masked_mean

__all__ = ["POOLING_MODES", "Pooler", "PoolingConfig", "last_token", "masked_mean", "positional_weighted_mean",
           "weighted_mean"]


def weighted_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weights 1..L over the pooled tokens: later tokens weigh more (the legacy convention)."""
    mask = mask.to(hidden.dtype)
    weights = mask.cumsum(dim=1) * mask  # (batch, seq): 1, 2, ... on pooled tokens, 0 elsewhere
    weights = (weights / weights.sum(1, keepdim=True).clamp(min=1e-9)).unsqueeze(-1)
    return (hidden * weights).sum(1)


def positional_weighted_mean(hidden: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Each pooled token weighs its 1-based position after any left padding
    (sentence-transformers' ``weightedmean``)."""
    positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=torch.float32).unsqueeze(0)
    left_pad = attention_mask.to(torch.int32).argmax(dim=1, keepdim=True)  # (batch, 1)
    weights = ((positions - left_pad) * mask.to(torch.float32)).unsqueeze(-1)  # (batch, seq, 1)
    pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return pooled.to(hidden.dtype)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last pooled token of each row, whatever the padding side."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]


class Pooler(nn.Module):
    def __init__(self, hidden_size: int, cfg: PoolingConfig, positional: bool = True):
        super().__init__()
        self.cfg = cfg
        self.positional = positional
        self.latent = (LatentAttention(hidden_size, cfg.num_latents, cfg.num_heads, cfg.mlp_mult)
                       if cfg.mode == "latent_attention" else None)

    def forward(self, hidden: torch.Tensor, embed_mask: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.latent is not None:
            # The latent layer runs in float32 even under a bf16 backbone: it is small and its
            # softmax over 512 latents is where low precision hurts.
            pooled = self.latent(hidden.float(), embed_mask)
        elif self.cfg.mode == "mean":
            pooled = masked_mean(hidden, embed_mask)
        elif self.cfg.mode == "weighted_mean" and self.positional:
            if attention_mask is None:
                raise ValueError("positional weighted mean needs the attention mask (where the padding is)")
            pooled = positional_weighted_mean(hidden, embed_mask, attention_mask)
        elif self.cfg.mode == "weighted_mean":
            pooled = weighted_mean(hidden, embed_mask)
        else:
            pooled = last_token(hidden, embed_mask)
        return F.normalize(pooled.float(), dim=-1)
