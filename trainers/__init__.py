"""Quarry trainers: the NV-Embed embedding model, its losses and the contrastive trainer.

The configs (``trainers.config``) need no torch; the model does, so the names below are
imported on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EmbeddingModel": "trainers.model", "EmbeddingModelConfig": "trainers.model",
    "LoraSettings": "trainers.config", "PoolingConfig": "trainers.config", "TrainConfig": "trainers.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
