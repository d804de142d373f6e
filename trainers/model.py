"""``EmbeddingModel``: a Hugging Face backbone made bidirectional, with a pooling head.

    from trainers import EmbeddingModel
    model = EmbeddingModel.from_pretrained("path/or/id", pooling="latent_attention")
    vectors = model.encode(["a text"], instruction="Instruct: ...\\nQuery: ")
    model.save_pretrained("out/")

Decoders (Llama, Mistral, Qwen2, ...) are made bidirectional through their config
(``is_causal = False``): transformers then builds a padding-only mask for eager, sdpa
and flash attention alike, without copying any attention class. Encoders (BERT-like)
are bidirectional already. ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from storage import InputError, first_line
from storage.packaged import check_folder_or_hub_id
from trainers.config import LoraSettings, PoolingConfig
from trainers.loss import prefix
from trainers.pooling import Pooler
from trainers.st_files import load_head_weights, takes_pooling_layer, write_files
from trainers.tokenization import CONVENTIONS, QUARRY, SENTENCE_TRANSFORMERS, input_encoder, pad_pairs

log = logging.getLogger("quarry")

CONFIG_NAME = "quarry_embedding.json"
ADAPTER_DIR = "adapter"
DECODER_TYPES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "mixtral"}
DECODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ENCODER_LORA_TARGETS = ["query", "key", "value", "dense"]


@dataclass
class EmbeddingModelConfig:
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    bidirectional: bool = True
    is_decoder: bool = False
    max_length: int = 512
    add_eos: bool = False  # decoders: append EOS (last-token pooling needs it)
    padding_side: str = "right"
    # sentence-transformers prompt name -> instruction, keyed as mteb looks them up:
    # "<task>-query" for a retrieval task's queries, "<task>" for every text of a class task.
    prompts: dict[str, str] = field(default_factory=dict)
    # How instructions are tokenized and pooled (trainers/tokenization.py). A config saved
    # before this field existed is the legacy "quarry" convention.
    convention: str = SENTENCE_TRANSFORMERS

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise ValueError(f"{CONFIG_NAME}: unknown convention {self.convention!r}: use {', '.join(CONVENTIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingModelConfig":
        d = dict(d)
        version = d.pop("format", 1)
        if version != 1:
            raise ValueError(f"{CONFIG_NAME} format {version} is newer than this Quarry understands")
        d["pooling"] = PoolingConfig(**d.get("pooling", {}))
        d.setdefault("convention", QUARRY)
        return cls(**d)


def flash_attention_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_backbone_config(path: str, trust_remote_code: bool = False, revision: str | None = None):
    """The backbone's transformers config: cheap, so the driver checks a backbone with it
    before any worker starts."""
    from transformers import AutoConfig

    return _loading(path, AutoConfig.from_pretrained, path, trust_remote_code=trust_remote_code, revision=revision)


# Dropout settings of the backbone families Quarry trains: attention (decoders and BERT)
# and hidden-state dropout (BERT). SimCSE raises them while it trains (set_dropout).
DROPOUT_FIELDS = ("attention_dropout", "attention_probs_dropout_prob", "hidden_dropout_prob")


def set_dropout(config, p: float) -> dict[str, float]:
    """Set every dropout field ``config`` has to ``p``; returns the values it had. Modules
    read these when they are built, so call it on the config before the model loads."""
    before = {name: getattr(config, name) for name in DROPOUT_FIELDS if hasattr(config, name)}
    for name in before:
        setattr(config, name, p)
    return before


def keep_first_layers(config, keep: int) -> None:
    """Shorten ``config`` to its first ``keep`` transformer layers: the model then builds (and
    loads weights for) those alone, and its saved config.json says ``keep``."""
    config.num_hidden_layers = keep
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (transformers 5)
        config.layer_types = config.layer_types[:keep]


def _load_backbone(path: str, bidirectional: bool, attn_implementation: str, dtype, trust_remote_code: bool,
                   revision: str | None, keep_layers: int | float | None = None, dropout: float | None = None,
                   auto_class=None):
    """The backbone (``AutoModel``, or ``auto_class``), bidirectional if asked, cut to
    ``keep_layers`` (a count or a fraction), with every dropout at ``dropout`` if given."""
    from transformers import AutoModel

    from trainers.config import layers_to_keep

    if attn_implementation == "flash_attention_2" and not flash_attention_available():
        raise ImportError("flash_attention_2 needs flash-attn and a CUDA GPU: pip install .[gpu]; "
                          "or use attn_implementation='sdpa'")
    config = load_backbone_config(path, trust_remote_code, revision)
    is_decoder = config.model_type in DECODER_TYPES
    if is_decoder and bidirectional:
        config.is_causal = False  # saved in config.json, so the saved model stays bidirectional
    keep = layers_to_keep(keep_layers, config.num_hidden_layers)
    if keep is not None and keep < config.num_hidden_layers:
        log.info("model: keeping the first %d of %d layers", keep, config.num_hidden_layers)
        keep_first_layers(config, keep)
    if dropout is not None:
        set_dropout(config, dropout)
    kwargs = {"config": config, "attn_implementation": attn_implementation, "trust_remote_code": trust_remote_code,
              "revision": revision}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if os.path.isfile(os.path.join(path, CONFIG_NAME)) and takes_pooling_layer(config):
        # A model Quarry saved has no [CLS] pooler (removed below before it was saved): build
        # none, rather than one whose weights transformers reports as missing.
        kwargs["add_pooling_layer"] = False
    model = _loading(path, (auto_class or AutoModel).from_pretrained, path, **kwargs)
    if isinstance(getattr(model, "pooler", None), nn.Module):
        # BERT-style encoders carry a [CLS] pooler that Quarry never uses (it pools the last
        # hidden states itself); left in, LoRA would adapt it and DDP would find parameters
        # without gradients.
        model.pooler = None
    return model, is_decoder


def with_lora(backbone: nn.Module, lora: LoraSettings, is_decoder: bool) -> nn.Module:
    """``backbone`` with LoRA on the family's attention and MLP projections (or
    ``lora.targets``): only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = lora.targets or (DECODER_LORA_TARGETS if is_decoder else ENCODER_LORA_TARGETS)
    present = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    targets = [t for t in targets if t in present]
    if not targets:
        raise ValueError("none of the LoRA target modules exist in this backbone; give lora.targets")
    return get_peft_model(backbone, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                               target_modules=targets))


def _loading(path: str, load, *args, **kwargs):
    """``load(*args, **kwargs)``, with a failure said in one line that names the model."""
    check_folder_or_hub_id(path, "model")
    try:
        return load(*args, **kwargs)
    except (OSError, ValueError, KeyError) as e:  # missing folder or hub id, bad config, unknown model type
        raise InputError(f"model {path!r} does not load: {first_line(e)}") from None


class EmbeddingModel(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer, config: EmbeddingModelConfig, pooler: Pooler | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config
        hidden = self._base_config().hidden_size
        self.pooler = pooler if pooler is not None else Pooler(hidden, config.pooling,
                                                               positional=config.convention == SENTENCE_TRANSFORMERS)
        # May set the tokenizer to append EOS itself (the sentence-transformers convention).
        self.inputs = input_encoder(tokenizer, config.convention, config.add_eos)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_id: str, pooling: str | PoolingConfig | None = None, bidirectional: bool = True,
                        attn_implementation: str = "sdpa", dtype=None, max_length: int | None = None,
                        trust_remote_code: bool = False, revision: str | None = None,
                        lora: LoraSettings | None = None, keep_layers: int | float | None = None,
                        dropout: float | None = None) -> "EmbeddingModel":
        """A backbone by path or hub id, or a model Quarry saved (its pooling head included).

        ``keep_layers``: the first N layers only (or that fraction); ``dropout``: every
        dropout of the backbone at this rate while training (SimCSE)."""
        from transformers import AutoTokenizer

        saved = os.path.isfile(os.path.join(path_or_id, CONFIG_NAME))
        if saved:
            with open(os.path.join(path_or_id, CONFIG_NAME), encoding="utf-8") as f:
                cfg = EmbeddingModelConfig.from_dict(json.load(f))
            bidirectional = cfg.bidirectional  # a model saved causal (last-token, E5-style) stays causal
        backbone, is_decoder = _load_backbone(path_or_id, bidirectional, attn_implementation, dtype,
                                              trust_remote_code, revision, keep_layers, dropout)
        tokenizer = _loading(path_or_id, AutoTokenizer.from_pretrained, path_or_id, trust_remote_code=trust_remote_code,
                             revision=revision)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if saved:
            if max_length:
                cfg.max_length = max_length
            model = cls(backbone, tokenizer, cfg)
            load_head_weights(path_or_id, model.pooler)
            adapter = os.path.join(path_or_id, ADAPTER_DIR)
            if os.path.isdir(adapter):
                from peft import PeftModel

                model.backbone = PeftModel.from_pretrained(model.backbone, adapter, is_trainable=lora is not None)
            elif lora is not None:
                model.add_lora(lora)  # stage 2: a fresh LoRA over stage 1's merged weights
            return model
        if isinstance(pooling, str) or pooling is None:
            pooling = PoolingConfig(mode=pooling or "latent_attention")
        cfg = EmbeddingModelConfig(pooling=pooling, bidirectional=bidirectional, is_decoder=is_decoder,
                                   max_length=max_length or 512, add_eos=is_decoder)
        model = cls(backbone, tokenizer, cfg)
        if lora is not None:
            model.add_lora(lora)
        return model

    def add_lora(self, lora: LoraSettings) -> None:
        self.backbone = with_lora(self.backbone, lora, self.config.is_decoder)

    def _base_config(self):
        base = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone
        return base.config

    # -- forward and encode --------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, embed_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return self.pooler(out.last_hidden_state, embed_mask, attention_mask)  # (batch, hidden), L2-normalised

    def encode_inputs(self, instructions: list[str], texts: list[str],
                      max_length: int | None = None) -> list[tuple[list, list]]:
        """(ids, embed_mask) of each (instruction, text), unpadded: ``pad`` batches them."""
        limit = max_length or self.config.max_length
        return [self.inputs.encode(ins or "", text, limit) for ins, text in zip(instructions, texts)]

    def pad(self, pairs: list[tuple[list, list]]) -> dict[str, torch.Tensor]:
        return pad_pairs(self.tokenizer, pairs, self.config.padding_side)

    def tokenize(self, texts: list[str], instructions: list[str] | str | None = None,
                 max_length: int | None = None) -> dict[str, torch.Tensor]:
        if instructions is None or isinstance(instructions, str):
            instructions = [instructions or ""] * len(texts)
        return self.pad(self.encode_inputs(instructions, texts, max_length))

    @torch.inference_mode()
    def encode(self, texts: list[str], instruction: str | None = None, batch_size: int = 32,
               dim: int | None = None) -> np.ndarray:
        """L2-normalised float32 rows, in input order (texts are batched by length).

        ``dim``: the first ``dim`` coordinates, renormalised: a Matryoshka embedding
        (``SentenceTransformer(folder, truncate_dim=dim)`` with ``normalize_embeddings=True``
        gives the same vectors)."""
        full = self.pooler_dim()
        if dim is not None and not 1 <= dim <= full:
            raise InputError(f"dim {dim}: this model's embeddings have {full} dimensions")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), dim or full), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in self.tokenize([texts[i] for i in idx], instruction).items()}
            vectors = self(**batch).float()
            out[idx] = (prefix(vectors, dim) if dim else vectors).cpu().numpy()
        self.train(was_training)
        return out

    def pooler_dim(self) -> int:
        return self._base_config().hidden_size

    # -- saving ------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str, merge_lora: bool = True) -> str:
        """A folder ``from_pretrained`` loads back, and ``SentenceTransformer(out_dir)`` too,
        with the same vectors as :meth:`encode`; returns its form (trainers/st_files.py)."""
        os.makedirs(out_dir, exist_ok=True)
        backbone = self.backbone
        adapter_kept = hasattr(backbone, "peft_config") and not merge_lora
        if hasattr(backbone, "peft_config"):
            if merge_lora:
                backbone = copy.deepcopy(backbone).merge_and_unload()
            else:
                backbone.save_pretrained(os.path.join(out_dir, ADAPTER_DIR))
                # The base without the injected LoRA layers, under its original weight names.
                backbone = copy.deepcopy(backbone).unload()
        backbone.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        with open(os.path.join(out_dir, CONFIG_NAME), "w", encoding="utf-8") as f:
            json.dump({**self.config.to_dict(), "format": 1}, f, indent=2)
        return write_files(out_dir, self, adapter_kept)
