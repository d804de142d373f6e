"""NV-Embed's latent-attention pooling head, in one file that needs only torch.

Quarry's ``Pooler`` runs ``LatentAttention``; a saved model carries this very file
(``quarry_latent_attention.py``), so that ``SentenceTransformer(folder,
trust_remote_code=True)`` loads the head where Quarry is not installed, as NV-Embed-v2 ships
its own. ``LatentAttentionHead`` is that sentence-transformers module; it is built on first
use (``__getattr__``), so that training, which never needs it, does not import
sentence-transformers. Nothing here may import Quarry. Tested by
``tests/trainers/test_sentence_transformers_export.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate)


class LatentAttention(nn.Module):
    """NV-Embed's latent attention layer, then masked mean pooling.

    The hidden states are the queries; a trainable latent array (num_latents, hidden) is
    both keys and values: O = softmax(Q K^T / sqrt(d)) V per head, with a pre-LayerNorm
    and a residual, then a GEGLU MLP with its own pre-LayerNorm and residual.
    """

    def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8, mlp_mult: int = 4):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by {num_heads} heads")
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) * hidden_size ** -0.5)
        self.norm_q = nn.LayerNorm(hidden_size)
        self.norm_kv = nn.LayerNorm(hidden_size)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 2 * mlp_mult * hidden_size), GEGLU(),
                                 nn.Linear(mlp_mult * hidden_size, hidden_size))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latents = self.norm_kv(self.latents).unsqueeze(0).expand(hidden.shape[0], -1, -1)  # (batch, r, hidden)
        attended, _ = self.attention(self.norm_q(hidden), latents, latents, need_weights=False)  # (batch, seq, hidden)
        x = hidden + attended
        x = x + self.mlp(self.norm_mlp(x))
        return masked_mean(x, mask)


def without_prompt(attention_mask: torch.Tensor, prompt_length: int | None) -> torch.Tensor:
    """The attention mask with each row's first ``prompt_length`` real tokens zeroed (after
    any left padding): the tokens sentence-transformers' ``Pooling(include_prompt=False)``
    leaves out."""
    if not prompt_length:
        return attention_mask
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
    starts = attention_mask.to(torch.int64).argmax(dim=1, keepdim=True)  # the first real token of each row
    return attention_mask * (positions >= starts + int(prompt_length)).to(attention_mask.dtype)


def _head_class():
    from sentence_transformers.base.modules.module import Module

    class LatentAttentionHead(Module):
        """Token embeddings -> the L2-normalised latent-attention pooled sentence embedding,
        with the prompt's tokens left out as ``Pooling(include_prompt=False)`` does."""

        config_keys = ["hidden_size", "num_latents", "num_heads", "mlp_mult"]

        def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8, mlp_mult: int = 4):
            super().__init__()
            self.hidden_size, self.num_latents, self.num_heads, self.mlp_mult = (hidden_size, num_latents, num_heads,
                                                                                   mlp_mult)
            self.latent = LatentAttention(hidden_size, num_latents, num_heads, mlp_mult)

        def forward(self, features: dict, **kwargs) -> dict:
            prompt_length = features.get("prompt_length")
            if isinstance(prompt_length, torch.Tensor):
                prompt_length = int(prompt_length.flatten()[0].item())
            mask = without_prompt(features["attention_mask"], prompt_length)
            # float32 even under a bf16 backbone, as Quarry computes it.
            pooled = self.latent(features["token_embeddings"].float(), mask)
            features["sentence_embedding"] = F.normalize(pooled, dim=-1)
            return features

        def get_embedding_dimension(self) -> int:
            return self.hidden_size

        get_sentence_embedding_dimension = get_embedding_dimension

        def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
            self.save_config(output_path)
            self.save_torch_weights(output_path, safe_serialization=safe_serialization)

        @classmethod
        def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
                 local_files_only: bool = False, **kwargs):
            hub = {"subfolder": subfolder, "token": token, "cache_folder": cache_folder, "revision": revision,
                   "local_files_only": local_files_only}
            head = cls(**cls.load_config(model_name_or_path=model_name_or_path, **hub))
            return cls.load_torch_weights(model_name_or_path=model_name_or_path, model=head, **hub)

    return LatentAttentionHead


def __getattr__(name: str):
    if name == "LatentAttentionHead":
        head = _head_class()
        globals()[name] = head
        return head
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
