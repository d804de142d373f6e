"""Quarry trainers: the NV-Embed embedding model, its losses and the contrastive trainer."""

from trainers.model import EmbeddingModel, EmbeddingModelConfig, LoraSettings
from trainers.pooling import PoolingConfig

__all__ = ["EmbeddingModel", "EmbeddingModelConfig", "LoraSettings", "PoolingConfig"]
