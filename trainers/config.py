"""The typed training configs. YAML files (configs/train/*.yaml) only supply their values.

``TrainConfig`` nests ``PoolingConfig`` and ``LoraSettings``; ``TrainConfig.from_dict``
checks every value against its field's type, so a quoted ``use_gpu: "false"`` or an
``lr: x`` is a one-line error naming the file and the field, never a wrong run. No torch
here: the driver reads configs without loading a model.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from storage import InputError, validate_name

POOLING_MODES = ("latent_attention", "mean", "weighted_mean", "last_token")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
PARALLEL_STRATEGIES = ("ddp", "fsdp")
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray placement group strategies
# What a run trains for. contrastive: NV-Embed's instruction tuning on packed shards; mntp
# and simcse: LLM2Vec's two adaptation stages, on the passages of a corpus dataset.
OBJECTIVES = ("contrastive", "mntp", "simcse")
TEXT_OBJECTIVES = ("mntp", "simcse")
PARAMETER_FREE_POOLING = ("mean", "weighted_mean", "last_token")
MNTP_REPLACEMENTS = ("mask", "bert")  # mask: every selected token -> the mask token; bert: 80/10/10


@dataclass(frozen=True)
class MntpPreset:
    mask_probability: float
    replacement: str


# LLM2Vec's MNTP settings per family (arXiv 2404.05961, its released training configs): the Llama
# family masks 20% with BERT's 80/10/10, Mistral masks 80% and replaces them all.
MNTP_PRESETS = {"llama": MntpPreset(0.2, "bert"), "mistral": MntpPreset(0.8, "mask")}
MNTP_PRESET_BY_MODEL_TYPE = {"mistral": "mistral", "mixtral": "mistral"}  # others: llama


@dataclass
class PoolingConfig:
    mode: str = "latent_attention"  # latent_attention | mean | weighted_mean | last_token
    num_latents: int = 512  # NV-Embed: 512 latents
    num_heads: int = 8  # NV-Embed: 8 cross-attention heads
    mlp_mult: int = 4  # GEGLU feed-forward width multiplier, as the released NV-Embed code

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise InputError(f"unknown pooling {self.mode!r}: use {', '.join(POOLING_MODES)}")
        for name in ("num_latents", "num_heads", "mlp_mult"):
            if getattr(self, name) < 1:
                raise InputError(f"pooling.{name} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    targets: list[str] | None = None  # None: attention and MLP projections of the family

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise InputError(f"lora: r must be at least 1 and alpha positive, got r {self.r}, alpha {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class MntpSettings:
    preset: str = "auto"  # auto: mistral for Mistral backbones, llama for every other decoder
    mask_probability: float | None = None  # None: the preset's
    replacement: str | None = None  # mask | bert (80/10/10); None: the preset's
    # Decoders have no mask token: "_" as LLM2Vec, "eos", "<mask>" (added to the vocabulary,
    # embeddings resized, when the tokenizer lacks it), or any other single vocabulary token.
    mask_token: str = "_"

    def __post_init__(self) -> None:
        if self.preset != "auto" and self.preset not in MNTP_PRESETS:
            raise InputError(f"mntp.preset must be auto or one of {', '.join(MNTP_PRESETS)}, got {self.preset!r}")
        if self.mask_probability is not None and not 0 < self.mask_probability <= 1:
            raise InputError(f"mntp.mask_probability must be in (0, 1], got {self.mask_probability}")
        if self.replacement is not None and self.replacement not in MNTP_REPLACEMENTS:
            raise InputError(f"mntp.replacement must be one of {', '.join(MNTP_REPLACEMENTS)}, got {self.replacement!r}")
        if not self.mask_token:
            raise InputError("mntp.mask_token must not be empty")

    def resolve(self, model_type: str) -> MntpPreset:
        """The masking this run uses on a backbone of ``model_type``: the preset, then overrides."""
        name = self.preset if self.preset != "auto" else MNTP_PRESET_BY_MODEL_TYPE.get(model_type, "llama")
        preset = MNTP_PRESETS[name]
        return MntpPreset(self.mask_probability if self.mask_probability is not None else preset.mask_probability,
                          self.replacement or preset.replacement)


@dataclass
class SimcseSettings:
    # Dropout is SimCSE's only augmentation: the two passes of a text differ by it alone.
    # Set on the backbone's attention (and, for BERT-like encoders, hidden) dropout while the
    # stage trains; the saved model keeps the backbone's own values. LLM2Vec: 0.3.
    dropout: float = 0.3

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise InputError(f"simcse.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    run_name: str = "cpu-minilm"  # runs/<run_name> (checkpoints, TensorBoard), models/<run_name> (the model)
    backbone: str = "packaged:all-MiniLM-L6-v2"  # path, hub id, packaged MiniLM, or tiny:<llama|mistral|qwen2>
    objective: str = "contrastive"  # contrastive | mntp | simcse (OBJECTIVES)
    shards: str = "vital-stage1"  # shards dataset made by `quarry export` (objective contrastive)
    corpus: str | None = None  # corpus dataset whose passages mntp and simcse train on
    # contrastive: queries per global batch the shards must hold (None: as exported);
    # mntp, simcse: passages per global batch (required: LLM2Vec used 32 and 128).
    global_batch: int | None = None
    init_from: str | None = None  # a saved Quarry model (stage 1's output) to start stage 2 from
    pooling: PoolingConfig = field(default_factory=PoolingConfig)  # YAML: a mapping, or just the mode
    bidirectional: bool = True
    attn_implementation: str = "sdpa"
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: full fine-tuning
    mntp: MntpSettings = field(default_factory=MntpSettings)  # objective mntp only
    simcse: SimcseSettings = field(default_factory=SimcseSettings)  # objective simcse only
    # Matryoshka: the loss is also applied to each L2-renormalised prefix of these sizes and
    # the weighted losses summed (the full dimension is always included, weight 1 unless
    # given). None: the full embedding only.
    matryoshka_dims: list[int] | None = None
    matryoshka_weights: list[float] | None = None  # one per matryoshka_dims entry (None: all 1)
    # Layer pruning: keep the first N transformer layers (an integer), or that fraction of
    # them (a number below 1), before training. None: every layer.
    keep_layers: int | float | None = None
    trust_remote_code: bool = False
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int | None = None  # None: epochs x batches
    epochs: int = 1
    temperature: float = 0.02
    max_length: int = 128  # tokens per text in training
    encode_max_length: int | None = None  # tokens per text the saved model encodes with (None: max_length)
    grad_clip: float | None = 1.0
    num_workers: int = 2
    use_gpu: bool = False
    strategy: str = "ddp"  # ddp | fsdp (large backbones)
    # How Ray places the workers: PACK fills a node first (the fewest nodes: NVLink, no
    # network between GPUs of one node), SPREAD puts them on as many nodes as it can.
    placement: str = "PACK"
    bf16: bool | None = None  # None: on when training on GPUs
    gradient_checkpointing: bool = False
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    # Ray Train restarts the worker group from the last checkpoint this many times after a
    # worker or node dies (FailureConfig.max_failures; -1: without limit, 0: fail at once).
    max_failures: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        validate_name(self.run_name, "run name")
        validate_name(self.shards)
        self._check_objective()
        self._check_matryoshka()
        if self.keep_layers is not None and (self.keep_layers <= 0 or (
                isinstance(self.keep_layers, float) and self.keep_layers >= 1)):
            raise InputError(f"keep_layers must be a positive number of layers or a fraction in (0, 1), "
                             f"got {self.keep_layers}")
        if self.placement not in PLACEMENTS:
            raise InputError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}")
        if self.strategy not in PARALLEL_STRATEGIES:
            raise InputError(f"strategy must be ddp or fsdp, got {self.strategy!r}")
        if self.attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise InputError(f"attn_implementation must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, "
                             f"got {self.attn_implementation!r}")
        if self.encode_max_length is not None and self.encode_max_length < 1:
            raise InputError(f"encode_max_length must be at least 1, got {self.encode_max_length}")
        for name in ("num_workers", "epochs", "checkpoint_every", "keep_checkpoints", "max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_failures < -1:
            raise InputError(f"max_failures must be -1 (no limit), 0 or more, got {self.max_failures}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise InputError("warmup_steps and weight_decay must not be negative")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise InputError(f"grad_clip must be positive (or null: off), got {self.grad_clip}")
        if self.global_batch is not None and (self.global_batch < self.num_workers
                                              or self.global_batch % self.num_workers):
            raise InputError(f"global_batch {self.global_batch} must be a positive multiple of num_workers "
                             f"{self.num_workers}")

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.objective not in TEXT_OBJECTIVES:
            return
        if self.corpus is None:
            raise InputError(f"objective {self.objective} trains on corpus passages: set corpus (a corpus dataset)")
        validate_name(self.corpus)
        if self.global_batch is None:
            raise InputError(f"objective {self.objective}: set global_batch, the passages per step over all "
                             "workers (LLM2Vec: 32 for mntp, 128 for simcse)")
        if self.pooling.mode not in PARAMETER_FREE_POOLING:
            raise InputError(f"objective {self.objective} trains the backbone alone: set pooling to one of "
                             f"{', '.join(PARAMETER_FREE_POOLING)} (LLM2Vec: mean), not {self.pooling.mode}")
        if self.objective == "mntp" and self.matryoshka_dims:
            raise InputError("matryoshka_dims: objective mntp makes no embeddings to nest")

    def _check_matryoshka(self) -> None:
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        if dims is None:
            if weights is not None:
                raise InputError("matryoshka_weights needs matryoshka_dims")
            return
        if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise InputError(f"matryoshka_dims must be distinct positive sizes, got {dims}")
        if weights is not None and (len(weights) != len(dims) or any(w <= 0 for w in weights)):
            raise InputError(f"matryoshka_weights must give one positive weight per dimension ({len(dims)}), "
                             f"got {weights}")

    def matryoshka(self, full_dim: int) -> tuple[tuple[int, float], ...]:
        """(prefix size, weight) pairs for an embedding of ``full_dim``, smallest first; the
        full dimension is always one of them. Empty without ``matryoshka_dims``."""
        if not self.matryoshka_dims:
            return ()
        too_big = [d for d in self.matryoshka_dims if d > full_dim]
        if too_big:
            raise InputError(f"matryoshka_dims {too_big} exceed the embedding's {full_dim} dimensions")
        weights = self.matryoshka_weights or [1.0] * len(self.matryoshka_dims)
        pairs = dict(zip(self.matryoshka_dims, weights))
        pairs.setdefault(full_dim, 1.0)
        return tuple(sorted(pairs.items()))

    @property
    def data_kind(self) -> str:
        """The catalog kind this run reads: shards (contrastive) or corpus (mntp, simcse)."""
        return "corpus" if self.objective in TEXT_OBJECTIVES else "shards"

    @property
    def data_name(self) -> str:
        return self.corpus if self.objective in TEXT_OBJECTIVES else self.shards

    def total_steps(self, num_batches: int) -> int:
        """The schedule's length: ``max_steps``, else ``epochs`` passes over the shards' batches."""
        return self.max_steps or self.epochs * num_batches

    @property
    def saved_max_length(self) -> int:
        """What the saved model truncates to when it encodes (evaluation, ``quarry encode``)."""
        return self.encode_max_length or self.max_length

    @property
    def use_bf16(self) -> bool:
        return self.bf16 if self.bf16 is not None else self.use_gpu

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> "TrainConfig":
        return _build(cls, raw, where, "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layers_to_keep(keep_layers: int | float | None, num_layers: int) -> int | None:
    """How many of a backbone's ``num_layers`` layers ``keep_layers`` (a count, or a fraction
    below 1, rounded, at least 1) keeps; None: all of them."""
    if keep_layers is None:
        return None
    keep = keep_layers if isinstance(keep_layers, int) else max(1, round(keep_layers * num_layers))
    if keep > num_layers:
        raise InputError(f"keep_layers {keep}: the backbone has only {num_layers} layers")
    return keep


def _build(cls, raw: Any, where: str, path: str):
    """``cls(**raw)`` after checking each value against its field's type."""
    if isinstance(raw, str) and cls is PoolingConfig:
        raw = {"mode": raw}  # `pooling: mean` is short for `pooling: {mode: mean}`
    if not isinstance(raw, dict):
        raise InputError(f"{where}: {path.rstrip('.') or 'config'}: expected a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise InputError(f"{where}: {path}{key}: unknown field (fields: {', '.join(sorted(known))})")
        values[key] = _check(value, hints[key], where, f"{path}{key}")
    try:
        return cls(**values)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _check(value: Any, hint: Any, where: str, path: str) -> Any:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(f"{where}: {path}: must be set, got null")
    for option in options:
        if dataclasses.is_dataclass(option):
            return _build(option, value, where, f"{path}.")
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str):
            # PyYAML reads `1e-4` (no dot) as a string: accept any text that is a number.
            try:
                return float(value)
            except ValueError:
                pass
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            item = typing.get_args(option)[0]
            if item is str and all(isinstance(v, str) for v in value):
                return value
            if item is int and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return value
            if item is float and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return [float(v) for v in value]
    expected = " or ".join(_describe(o) for o in options)
    raise InputError(f"{where}: {path}: expected {expected}, got {value!r}")


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(
        hint, f"a list of {_LIST_ITEMS.get(typing.get_args(hint)[0], 'values')}" if typing.get_origin(hint) is list
        else str(hint))


_LIST_ITEMS = {str: "strings", int: "integers", float: "numbers"}
