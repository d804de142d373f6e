"""Instruction-aware tokenization, in one of two conventions.

``sentence-transformers`` (the default of every model built now) is that library's own:
the instruction and the text are joined into one string and tokenized together, and the
instruction is left out of the pooled tokens by its standalone token count (the prompt
tokenized alone, less a trailing special token). Without an instruction every token is
pooled, the leading ``[CLS]``/``<s>`` included. A decoder's EOS is appended by the
tokenizer itself (``append_eos``), so that a saved folder reproduces it wherever it is
loaded. Quarry trains and encodes exactly as ``Transformer`` + ``Pooling(include_prompt=
False)`` then compute, which is what lets a saved model be a plain sentence-transformers
folder. Its one cost: a byte-level BPE may merge the instruction's last token with the
text's first, and the count then leaves that first token out of the pooled set
(``boundary_merges`` finds such prompts; training and inference agree either way).

``quarry`` (models saved before the convention existed) tokenizes the instruction and the
text apart and joins the ids, so the boundary is exact; ``embed_mask`` is 1 on the text's
tokens and on the suffix (EOS/SEP), 0 on the special prefix, the instruction and padding.
Such a model loads in sentence-transformers only through Quarry's own module.

Both give ``(ids, embed_mask)`` per text, and ``pad_pairs`` batches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SENTENCE_TRANSFORMERS = "sentence-transformers"
QUARRY = "quarry"
CONVENTIONS = (SENTENCE_TRANSFORMERS, QUARRY)
PROBE = "quarry probe"


@dataclass(frozen=True)
class SpecialLayout:
    prefix: tuple[int, ...]  # e.g. (bos,) or (cls,)
    suffix: tuple[int, ...]  # e.g. (sep,) or (eos,)


def special_layout(tokenizer, add_eos: bool = False) -> SpecialLayout:
    """Where the tokenizer puts its special tokens around a sequence (and EOS after them,
    if ``add_eos`` and the tokenizer does not add it)."""
    # Encode a probe with and without special tokens and find the plain ids inside: this
    # reads what the tokenizer's post-processor really adds (build_inputs_with_special_tokens
    # no longer reports it for every fast tokenizer in transformers 5).
    plain = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(PROBE)["input_ids"]
    n = len(plain)
    at = next((i for i in range(len(full) - n + 1) if full[i:i + n] == plain), None)
    if at is None:
        raise ValueError("cannot locate the text among the special tokens this tokenizer adds")
    prefix, suffix = tuple(full[:at]), tuple(full[at + n:])
    eos = tokenizer.eos_token_id
    if add_eos and eos is not None and eos not in suffix:
        suffix = suffix + (eos,)
    return SpecialLayout(prefix, suffix)


def append_eos(tokenizer) -> bool:
    """Make ``tokenizer`` append its EOS to every sequence by itself, as part of its saved
    state; True when it now does.

    transformers 5 rebuilds a tokenizer's post-processor from its ``add_bos_token`` /
    ``add_eos_token`` flags (saved in tokenizer_config.json), so both flags are set to say
    the template wanted; older releases read the same template from tokenizer.json. A
    tokenizer with other leading specials than BOS is left alone (False)."""
    if tokenizer.eos_token_id is None:
        return False
    layout = special_layout(tokenizer)
    if layout.suffix[-1:] == (tokenizer.eos_token_id,):
        return True
    if layout.suffix or layout.prefix not in ((), (tokenizer.bos_token_id,)):
        return False
    if not hasattr(type(tokenizer), "update_post_processor"):
        return False
    tokenizer.add_bos_token = bool(layout.prefix)
    tokenizer.add_eos_token = True
    now = special_layout(tokenizer)
    return now == SpecialLayout(layout.prefix, (tokenizer.eos_token_id,))


def prompt_length(tokenizer, prompt: str, max_length: int) -> int:
    """sentence-transformers' count of a prompt's tokens: the prompt tokenized alone (special
    tokens included), less a trailing special token."""
    ids = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
    n = len(ids)
    if ids and ids[-1] in tokenizer.all_special_ids:
        n -= 1
    return n


def boundary_merges(tokenizer, prompt: str, text: str = "what is it") -> bool:
    """Whether the tokenizer merges the prompt's end with a following text, so that the
    prompt count covers the text's first token under the sentence-transformers convention."""
    alone = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joined = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    return joined[:len(alone)] != alone or tokenizer.decode(joined[len(alone):]) != text


class JoinedInputs:
    """The sentence-transformers convention (module docstring)."""

    def __init__(self, tokenizer, add_eos: bool):
        self.tokenizer = tokenizer
        # A tokenizer that cannot append EOS itself still gets one here; its model then
        # saves with Quarry's own module (trainers/st_files.py).
        eos = tokenizer.eos_token_id
        self.eos = eos if add_eos and eos is not None and not append_eos(tokenizer) else None
        self._prompt_lengths: dict[tuple[str, int], int] = {}

    @property
    def standard(self) -> bool:
        """Whether ``Transformer`` + ``Pooling`` reproduce this exactly (the tokenizer adds
        every special token itself)."""
        return self.eos is None

    def encode(self, instruction: str, text: str, max_length: int) -> tuple[list, list]:
        limit = max_length - (self.eos is not None)
        ids = self.tokenizer(instruction + text, truncation=True, max_length=limit)["input_ids"]
        if self.eos is not None:
            ids = ids + [self.eos]
        skip = 0
        if instruction:
            key = (instruction, max_length)
            if key not in self._prompt_lengths:
                self._prompt_lengths[key] = prompt_length(self.tokenizer, instruction, max_length)
            skip = self._prompt_lengths[key]
        if skip >= len(ids):
            raise ValueError(f"max_length {max_length} leaves no room for the text after a {skip}-token instruction")
        return ids, [0] * skip + [1] * (len(ids) - skip)


class SplitInputs:
    """The ``quarry`` convention (module docstring)."""

    def __init__(self, tokenizer, add_eos: bool):
        self.tokenizer = tokenizer
        self.layout = special_layout(tokenizer, add_eos)

    def encode(self, instruction: str, text: str, max_length: int) -> tuple[list, list]:
        return encode_pair(self.tokenizer, self.layout, instruction, text, max_length)


def input_encoder(tokenizer, convention: str, add_eos: bool) -> JoinedInputs | SplitInputs:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown tokenization convention {convention!r}: use {', '.join(CONVENTIONS)}")
    return (JoinedInputs if convention == SENTENCE_TRANSFORMERS else SplitInputs)(tokenizer, add_eos)


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
