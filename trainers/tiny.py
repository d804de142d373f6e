"""Tiny decoders built from a config, for CPU tests and the decoder demo.

No small pretrained decoder is reachable offline, so these are randomly initialised
Llama / Mistral / Qwen2 models (2 layers, hidden 64) with a byte-level BPE tokenizer
trained on a few hundred embedded Wikipedia extracts, saved to disk and then loaded back
through the real loading code (``EmbeddingModel.from_pretrained``).
"""

from __future__ import annotations

import copy
import os

FAMILIES = ("llama", "mistral", "qwen2")


def train_tokenizer(texts: list[str], vocab_size: int = 1000):
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    # Like Llama: <s> in front of every sequence; EOS is appended by Quarry's tokenization.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def tiny_config(family: str, vocab_size: int, hidden: int = 64, layers: int = 2):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2)
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[family]
    return cls(**common)


def build_tiny_decoder(family: str, out_dir: str, texts: list[str], seed: int = 0) -> str:
    """Save a tiny random decoder and its tokenizer (trained on ``texts``) under ``out_dir``."""
    import torch
    from transformers import AutoModel

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}: use {', '.join(FAMILIES)}")
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    tokenizer = train_tokenizer(texts)
    torch.manual_seed(seed)
    config = tiny_config(family, len(tokenizer))
    # _from_config mutates the config it is given: hand it a copy.
    model = AutoModel.from_config(copy.deepcopy(config))
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
