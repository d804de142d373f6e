"""A sentence-transformers module that is a saved Quarry model, for the folders that ST's own
modules cannot reproduce (trainers/st_files.py says which): a model of the legacy
``quarry`` convention, which tokenizes the instruction apart from the text and never pools
``[CLS]``/``<s>``; a LoRA adapter kept apart; a tokenizer that cannot append its EOS itself.
``SentenceTransformer(folder, trust_remote_code=True)`` then encodes exactly as
``EmbeddingModel.encode`` does, for every pooling mode.

``modules.json`` names this class by its import path (``trainers.st_module.QuarryEncoder``),
so such a folder loads only where Quarry is installed; ``quarry export-model`` rewrites a
legacy model in the portable form. ``prompt=`` passed to ``SentenceTransformer.encode`` is
the instruction: attended to, never pooled.

Tested by tests/trainers/test_sentence_transformers_export.py.
"""

from __future__ import annotations

from typing import Any

import torch
from sentence_transformers.base.modules.input_module import InputModule

MODULE_TYPE = "trainers.st_module.QuarryEncoder"


class QuarryEncoder(InputModule):
    """Tokenization, backbone and pooling of one ``EmbeddingModel``; outputs L2-normalised
    ``sentence_embedding``."""

    save_in_root = True
    config_keys: list[str] = []

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model  # trainers.model.EmbeddingModel
        self.tokenizer = model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.model.config.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.model.config.max_length = int(value)

    def preprocess(self, inputs, prompt: str | None = None, **kwargs) -> dict[str, Any]:
        texts = [t if isinstance(t, str) else str(t) for t in inputs]
        return self.model.tokenize(texts, prompt or None)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        features["sentence_embedding"] = self.model(features["input_ids"], features["attention_mask"],
                                                    features["embed_mask"])
        return features

    def get_embedding_dimension(self) -> int:
        return self.model.pooler_dim()

    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, output_path: str, *args, **kwargs) -> None:
        self.model.save_pretrained(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", local_files_only: bool = False,
             model_kwargs: dict | None = None, **kwargs) -> "QuarryEncoder":
        import os

        from trainers.model import EmbeddingModel

        path = os.path.join(model_name_or_path, subfolder) if subfolder else model_name_or_path
        dtype = (model_kwargs or {}).get("dtype") or (model_kwargs or {}).get("torch_dtype")
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        return cls(EmbeddingModel.from_pretrained(path, dtype=None if dtype == "auto" else dtype))
