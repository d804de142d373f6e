"""``MntpModel``: a bidirectional decoder with its own causal-LM head, trained by MNTP.

The backbone loads through ``AutoModelForCausalLM`` (the LM head is the model's own and
stays frozen; only LoRA trains), with the causal mask off as for embedding. What it saves
is an encoder: the LoRA merged into the decoder, without the LM head, as a Quarry
embedding model with a parameter-free pooling (LLM2Vec: mean), so the next stage (SimCSE,
or supervised tuning) starts from it with ``init_from`` and ``quarry eval`` can score it.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from storage import InputError
from trainers.config import LoraSettings, MntpPreset, PoolingConfig
from trainers.mntp import mask_for_mntp, selected_logits
from trainers.model import (DECODER_TYPES, EmbeddingModel, EmbeddingModelConfig, _load_backbone, _loading,
                            load_backbone_config, with_lora)
from trainers.tokenization import batch_encode, special_layout

log = logging.getLogger("quarry")

EOS_MASK = "eos"
NEW_MASK = "<mask>"  # added to the vocabulary (embeddings resized) when the tokenizer lacks it


def resolve_mask_token(tokenizer, name: str) -> tuple[int, bool]:
    """(id of the mask token, whether it must be added to the vocabulary)."""
    if name == EOS_MASK:
        return tokenizer.eos_token_id, False
    token_id = tokenizer.convert_tokens_to_ids(name)
    if token_id is not None and token_id != tokenizer.unk_token_id:
        return token_id, False
    if name == NEW_MASK:
        return -1, True
    raise InputError(f"mntp.mask_token {name!r} is not a single token of this tokenizer: use eos, {NEW_MASK} "
                     "(added to the vocabulary) or another vocabulary token")


def require_decoder(config, name: str) -> str:
    """The model type of a backbone ``config`` (``name`` as the user gave it), which MNTP
    needs to be a decoder's: it trains through the LM head."""
    if config.model_type not in DECODER_TYPES:
        raise InputError(f"objective mntp needs a decoder backbone ({', '.join(sorted(DECODER_TYPES))}); "
                         f"{name} is a {config.model_type}")
    return config.model_type


class MntpModel(nn.Module):
    def __init__(self, causal_lm: nn.Module, tokenizer, config: EmbeddingModelConfig, mask_id: int,
                 masking: MntpPreset):
        super().__init__()
        self.lm = causal_lm
        self.tokenizer = tokenizer
        self.config = config  # of the encoder it saves
        self.layout = special_layout(tokenizer, config.add_eos)
        self.mask_id, self.masking = mask_id, masking
        special = set(tokenizer.all_special_ids) | set(self.layout.prefix) | set(self.layout.suffix)
        special.discard(None)
        self.register_buffer("special_ids", torch.tensor(sorted(special), dtype=torch.long), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str, pooling: PoolingConfig, mntp, attn_implementation: str = "sdpa", dtype=None,
                        max_length: int = 512, trust_remote_code: bool = False, lora: LoraSettings | None = None,
                        keep_layers: int | float | None = None) -> "MntpModel":
        """``mntp``: the run's ``MntpSettings``, resolved here against the backbone's family."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_type = require_decoder(load_backbone_config(path, trust_remote_code), path)
        causal, _ = _load_backbone(path, True, attn_implementation, dtype, trust_remote_code, None, keep_layers,
                                   auto_class=AutoModelForCausalLM)
        tokenizer = _loading(path, AutoTokenizer.from_pretrained, path, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        mask_id, add = resolve_mask_token(tokenizer, mntp.mask_token)
        if add:
            tokenizer.add_special_tokens({"mask_token": NEW_MASK})
            causal.resize_token_embeddings(len(tokenizer))
            mask_id = tokenizer.convert_tokens_to_ids(NEW_MASK)
            log.info("mntp: added %s to the vocabulary as token %d", NEW_MASK, mask_id)
        for p in causal.parameters():
            p.requires_grad_(False)  # LoRA (below) is all that trains; without it, the whole decoder
        if lora is not None:
            causal = with_lora(causal, lora, is_decoder=True)
        else:
            for p in _decoder(causal).parameters():
                p.requires_grad_(True)
        config = EmbeddingModelConfig(pooling=pooling, bidirectional=True, is_decoder=True, max_length=max_length,
                                      add_eos=True)
        return cls(causal, tokenizer, config, mask_id, mntp.resolve(model_type))

    def tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        encoded = batch_encode(self.tokenizer, self.layout, [""] * len(texts), texts, max_length,
                               self.config.padding_side)
        masked = mask_for_mntp(encoded["input_ids"], encoded["attention_mask"], self.special_ids.cpu(), self.mask_id,
                               self.masking.mask_probability, self.masking.replacement, len(self.tokenizer))
        return {"input_ids": masked.input_ids, "attention_mask": encoded["attention_mask"], "labels": masked.labels}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The MNTP loss of a masked batch (``tokenize``'s output)."""
        causal = _causal(self.lm)
        hidden = _decoder(causal)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits, targets = selected_logits(hidden, labels, causal.get_output_embeddings())
        return F.cross_entropy(logits.float(), targets)

    def save_pretrained(self, out_dir: str) -> None:
        """The encoder: LoRA merged into the decoder, no LM head, pooled as configured."""
        lm = self.lm
        if hasattr(lm, "peft_config"):
            lm = copy.deepcopy(lm).merge_and_unload()
        EmbeddingModel(_decoder(lm), self.tokenizer, self.config).save_pretrained(out_dir)


def _causal(lm: nn.Module) -> nn.Module:
    """The causal-LM module under a peft wrapper (LoRA layers sit inside it)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def _decoder(lm: nn.Module) -> nn.Module:
    """The transformer without its LM head (``model`` on Llama, Mistral, Qwen2, ...)."""
    causal = _causal(lm)
    return getattr(causal, causal.base_model_prefix)
