"""The typed training config. YAML files (configs/train/*.yaml) only supply its values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from storage import InputError, validate_name


@dataclass
class LoraConfigSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    targets: list[str] | None = None  # None: attention + MLP projections of the family


@dataclass
class TrainConfig:
    run_name: str = "cpu-minilm"  # runs/<run_name> (checkpoints, TensorBoard), models/<run_name> (the model)
    backbone: str = "packaged:all-MiniLM-L6-v2"  # path, hub id, packaged MiniLM, or tiny:<llama|mistral|qwen2>
    shards: str = "vital-stage1"  # shards dataset made by `quarry export`
    init_from: str | None = None  # a saved Quarry model (stage 1's output) to start stage 2 from
    pooling: str = "latent_attention"
    num_latents: int = 512
    num_heads: int = 8
    bidirectional: bool = True
    attn_implementation: str = "sdpa"
    lora: LoraConfigSection | None = field(default_factory=LoraConfigSection)  # None: full fine-tuning
    trust_remote_code: bool = False
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int | None = None  # None: epochs x batches
    epochs: int = 1
    temperature: float = 0.02
    max_length: int = 128
    grad_clip: float | None = 1.0
    num_workers: int = 2
    use_gpu: bool = False
    strategy: str = "ddp"  # ddp | fsdp (large backbones)
    bf16: bool | None = None  # None: on when training on GPUs
    gradient_checkpointing: bool = False
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        validate_name(self.run_name, "run name")
        validate_name(self.shards)
        if isinstance(self.lora, dict):
            self.lora = LoraConfigSection(**self.lora)
        if self.strategy not in ("ddp", "fsdp"):
            raise InputError(f"strategy must be ddp or fsdp, got {self.strategy!r}")
        if self.num_workers < 1:
            raise InputError("num_workers must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError("max_steps must be at least 1")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise InputError(f"{where}: {key}: unknown field (fields: {', '.join(sorted(known))})")
        try:
            return cls(**raw)
        except TypeError as e:
            raise InputError(f"{where}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
