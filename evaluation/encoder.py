"""mteb's encoder protocol over vectors computed beforehand.

``pipelines.evaluate`` embeds every text a task will ask for on the Ray actor pool (and
caches it) before mteb runs; mteb then calls :meth:`LookupEncoder.encode` with its
dataloaders and gets those vectors back. Which texts carry the task instruction follows
training: a retrieval query gets it, a document never does, and every text of a
classification, clustering or STS task is on the query side (mteb asks those with no
prompt type).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType


class MissingEmbedding(RuntimeError):
    """mteb asked for a text that was not embedded beforehand (a bug in Quarry's planning)."""


def input_side(prompt_type: PromptType | None) -> str:
    """``document`` for corpus texts, ``query`` for everything else."""
    return "document" if prompt_type == PromptType.document else "query"


class LookupEncoder(AbsEncoder):
    def __init__(self, name: str, revision: str, dim: int, vectors: np.ndarray, rows: dict[str, int],
                 key: Callable[[str, str], str], instructions: dict[str, str]):
        self.vectors = vectors
        self.rows = rows  # cache key -> row of ``vectors``
        self.key = key  # (instruction, text) -> cache key, as the model's ref computes it
        self.instructions = instructions  # task name -> instruction for its query-side texts
        self.mteb_model_meta = ModelMeta(
            loader=None, name=f"quarry/{name}", revision=revision, release_date=None, languages=None,
            n_parameters=None, memory_usage_mb=None, max_tokens=None, embed_dim=dim, license=None,
            open_weights=None, public_training_code=None, public_training_data=None, framework=["PyTorch"],
            similarity_fn_name="cosine", use_instructions=bool(any(instructions.values())), training_datasets=None)

    def instruction_for(self, task: str, prompt_type: PromptType | None) -> str:
        return "" if input_side(prompt_type) == "document" else self.instructions.get(task, "")

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        instruction = self.instruction_for(task_metadata.name, prompt_type)
        texts = [t for batch in inputs for t in batch["text"]]
        keys = [self.key(instruction, t) for t in texts]
        missing = sum(k not in self.rows for k in keys)
        if missing:
            raise MissingEmbedding(f"{task_metadata.name}: {missing} of {len(keys)} {input_side(prompt_type)} texts "
                                   "were not embedded before evaluation")
        return self.vectors[[self.rows[k] for k in keys]]
