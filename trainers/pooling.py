"""Pooling heads: hidden states (batch, seq, hidden) + embed mask -> one vector per text.

``embed_mask`` is 1 on the tokens that make up the text and 0 on padding and on the
instruction, which the model attends to but which never enters the pooled vector
(NV-Embed, LLM2Vec). Every head returns L2-normalised float vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers.config import POOLING_MODES, PoolingConfig

__all__ = ["POOLING_MODES", "Pooler", "PoolingConfig", "last_token", "masked_mean", "weighted_mean"]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def weighted_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Position weights 1..L over the pooled tokens: later tokens weigh more (LLM2Vec)."""
    mask = mask.to(hidden.dtype)
    weights = mask.cumsum(dim=1) * mask  # (batch, seq): 1, 2, ... on pooled tokens, 0 elsewhere
    weights = (weights / weights.sum(1, keepdim=True).clamp(min=1e-9)).unsqueeze(-1)
    return (hidden * weights).sum(1)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last pooled token of each row, whatever the padding side."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values  # (batch,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class LatentAttentionPooling(nn.Module):
    """NV-Embed's latent attention layer, then masked mean pooling.

    The hidden states are the queries; a trainable latent array (num_latents, hidden) is
    both keys and values: O = softmax(Q K^T / sqrt(d)) V per head, with a pre-LayerNorm
    and a residual, then a GEGLU MLP with its own pre-LayerNorm and residual.
    """

    def __init__(self, hidden_size: int, cfg: PoolingConfig):
        super().__init__()
        if hidden_size % cfg.num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {cfg.num_heads} heads")
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, hidden_size) * hidden_size ** -0.5)
        self.norm_q = nn.LayerNorm(hidden_size)
        self.norm_kv = nn.LayerNorm(hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, cfg.num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 2 * cfg.mlp_mult * hidden_size), GEGLU(),
                                 nn.Linear(cfg.mlp_mult * hidden_size, hidden_size))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latents = self.norm_kv(self.latents).unsqueeze(0).expand(hidden.shape[0], -1, -1)  # (batch, r, hidden)
        attended, _ = self.attention(self.norm_q(hidden), latents, latents, need_weights=False)  # (batch, seq, hidden)
        x = hidden + attended
        x = x + self.mlp(self.norm_mlp(x))
        return masked_mean(x, mask)


class Pooler(nn.Module):
    def __init__(self, hidden_size: int, cfg: PoolingConfig):
        super().__init__()
        self.cfg = cfg
        self.latent = LatentAttentionPooling(hidden_size, cfg) if cfg.mode == "latent_attention" else None

    def forward(self, hidden: torch.Tensor, embed_mask: torch.Tensor) -> torch.Tensor:
        if self.latent is not None:
            # The latent layer runs in float32 even under a bf16 backbone: it is small and its
            # softmax over 512 latents is where low precision hurts.
            pooled = self.latent(hidden.float(), embed_mask)
        elif self.cfg.mode == "mean":
            pooled = masked_mean(hidden, embed_mask)
        elif self.cfg.mode == "weighted_mean":
            pooled = weighted_mean(hidden, embed_mask)
        else:
            pooled = last_token(hidden, embed_mask)
        return F.normalize(pooled.float(), dim=-1)
