"""Instruction-aware tokenization with an exact instruction boundary.

The instruction and the text are tokenized separately and their ids joined, so the
boundary is exact even when the tokenizer would merge across it if given the joined
string (NV-Embed's released code counts the instruction's tokens on their own and can be
off by one there). ``embed_mask`` is 1 on the text's tokens and on the end-of-sequence
token, 0 on special prefix tokens, the instruction and padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecialLayout:
    prefix: tuple[int, ...]  # e.g. (bos,) or (cls,)
    suffix: tuple[int, ...]  # e.g. (sep,) or (eos,)


def special_layout(tokenizer, add_eos: bool) -> SpecialLayout:
    """Where the tokenizer puts its special tokens around a sequence."""
    # Encode a probe with and without special tokens and find the plain ids inside: this
    # reads what the tokenizer's post-processor really adds (build_inputs_with_special_tokens
    # no longer reports it for every fast tokenizer in transformers 5).
    probe = "quarry probe"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    n = len(plain)
    at = next((i for i in range(len(full) - n + 1) if full[i:i + n] == plain), None)
    if at is None:
        raise ValueError("cannot locate the text among the special tokens this tokenizer adds")
    prefix, suffix = tuple(full[:at]), tuple(full[at + n:])
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and eos not in suffix:
        suffix = suffix + (eos,)
    return SpecialLayout(prefix, suffix)


def encode_pair(tokenizer, layout: SpecialLayout, instruction: str, text: str, max_length: int) -> tuple[list, list]:
    """(ids, embed_mask) for one text: prefix + instruction + text + suffix, text truncated."""
    ins = tokenizer(instruction, add_special_tokens=False)["input_ids"] if instruction else []
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    room = max_length - len(layout.prefix) - len(layout.suffix) - len(ins)
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the text after a {len(ins)}-token instruction")
    body = body[:room]
    ids = list(layout.prefix) + ins + body + list(layout.suffix)
    mask = [0] * (len(layout.prefix) + len(ins)) + [1] * (len(body) + len(layout.suffix))
    return ids, mask


def batch_encode(tokenizer, layout: SpecialLayout, instructions: list[str], texts: list[str], max_length: int,
                 padding_side: str = "right") -> dict[str, torch.Tensor]:
    pairs = [encode_pair(tokenizer, layout, ins or "", t, max_length) for ins, t in zip(instructions, texts)]
    return pad_pairs(tokenizer, pairs, padding_side)


def pad_pairs(tokenizer, pairs: list[tuple[list, list]], padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Already encoded (ids, embed_mask) pairs padded into one batch."""
    width = max(len(ids) for ids, _ in pairs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids, attention, embed = [], [], []
    for ids, mask in pairs:
        n = width - len(ids)
        if padding_side == "left":
            input_ids.append([pad] * n + ids)
            attention.append([0] * n + [1] * len(ids))
            embed.append([0] * n + mask)
        else:
            input_ids.append(ids + [pad] * n)
            attention.append([1] * len(ids) + [0] * n)
            embed.append(mask + [0] * n)
    return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention),
            "embed_mask": torch.tensor(embed)}
