"""A sentence-transformers module that is a saved Quarry model, so that
``SentenceTransformer(folder)`` (and mteb through it) encodes exactly as
``EmbeddingModel.encode`` does, for every pooling mode, latent attention included.

Why one Quarry module rather than ST's own ``Transformer`` + ``Pooling``: the built-in pair
cannot express what Quarry trains with.
- ST tokenizes ``prompt + text`` as one string and masks the prompt by its standalone token
  count; Quarry tokenizes the instruction and the text apart and joins the ids, so the
  boundary is exact (byte-level BPE tokenizers merge across ``"Query: " + text``).
- ST's mean pooling includes the leading special token ([CLS], <s>) when there is no
  prompt and excludes it when there is one; Quarry never pools it.
- decoders need their EOS appended, which most decoder tokenizers do not do by themselves.
- latent-attention pooling is Quarry's own head.

So ``modules.json`` names this class by its import path (``trainers.st_module.QuarryEncoder``):
the folder loads wherever Quarry is installed, with no ``trust_remote_code``. ``prompt=``
passed to ``SentenceTransformer.encode`` is the instruction: attended to, never pooled.

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
