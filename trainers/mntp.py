"""Masked next-token prediction (LLM2Vec's second step): the masking rule and the loss.

A bidirectional decoder still predicts with its causal-LM head, so the token masked at
position i is predicted from the output at position i-1, as in ordinary next-token
prediction; the loss counts the selected positions only. Selection never touches special
tokens (BOS, EOS, padding) nor position 0, which has no position before it.

``mask_for_mntp`` and ``mntp_loss`` are pure tensor functions (tests/trainers/test_mntp.py);
``selected_logits`` is the cheap path the trainer takes: the LM head only on the hidden
states that predict a selected token, instead of a (batch, length, vocab) tensor. It is
tested against ``mntp_loss`` on full logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a position that is not predicted


@dataclass(frozen=True)
class MaskedBatch:
    input_ids: torch.Tensor  # (batch, length): the ids the model sees
    labels: torch.Tensor  # (batch, length): the original id where selected, IGNORE elsewhere


def selectable(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """Positions that may be masked: real tokens, not special, not the first position."""
    ok = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))
    ok[:, 0] = False  # nothing before it to predict it from
    return ok


def mask_for_mntp(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor,
                  mask_id: int, probability: float, replacement: str, vocab_size: int,
                  generator: torch.Generator | None = None) -> MaskedBatch:
    """Select each selectable token with ``probability`` and replace it.

    replacement ``mask``: every selected token becomes ``mask_id`` (LLM2Vec's Mistral
    recipe). ``bert``: 80% become ``mask_id``, 10% a random non-special token, 10% stay
    (BERT's recipe; LLM2Vec's Llama one). At least one token is selected whenever any is
    selectable, so a short batch never yields an empty loss.
    """
    if replacement not in ("mask", "bert"):
        raise ValueError(f"unknown MNTP replacement {replacement!r}")
    ok = selectable(input_ids, attention_mask, special_ids)
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = ok & (draw < probability)
    if not selected.any() and ok.any():
        flat = torch.where(ok.flatten(), draw.flatten(), torch.tensor(2.0)).argmin()
        selected.view(-1)[flat] = True
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    ids = input_ids.clone()
    if replacement == "mask":
        ids[selected] = mask_id
        return MaskedBatch(ids, labels)
    how = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (how < 0.8)
    to_random = selected & (how >= 0.8) & (how < 0.9)
    ids[to_mask] = mask_id
    ids[to_random] = random_tokens(int(to_random.sum()), vocab_size, special_ids, generator)
    return MaskedBatch(ids, labels)


def random_tokens(n: int, vocab_size: int, special_ids: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` ids drawn uniformly from the vocabulary without its special tokens."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special_ids[special_ids < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)
    return pool[torch.randint(len(pool), (n,), generator=generator)]


def mntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the selected tokens, each read from the position before it.

    logits: (batch, length, vocab), the LM head at every position; labels: MaskedBatch.labels.
    The plain reference for ``selected_logits``.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def selected_logits(hidden: torch.Tensor, labels: torch.Tensor, lm_head) -> tuple[torch.Tensor, torch.Tensor]:
    """The LM head on the hidden states at i-1 for every selected position i, and their labels.

    hidden: (batch, length, d) from the backbone; returns (selected, vocab) logits and
    (selected,) targets, so ``F.cross_entropy`` of the two equals ``mntp_loss`` on the full
    logits at a fraction of the memory (the vocabulary is the widest tensor in the model).
    """
    target = labels[:, 1:]
    chosen = target != IGNORE  # (batch, length - 1): row i-1 predicts position i
    return lm_head(hidden[:, :-1][chosen]), target[chosen]
