"""What is evaluated: a saved Quarry model or a sentence-transformers model, resolved once
in the driver to an exact folder and a content fingerprint, then loaded alike by every
encoder actor.

A Quarry model encodes (instruction, text) pairs with the instruction tokenized apart and
never pooled, exactly as in training. A sentence-transformers model (the teacher among them)
sees an instruction as a prefix of the string, as ``prompt=`` does.

Tested by tests/pipelines/evaluate/test_eval_ray.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from miners.teacher import AUTO, ResolvedTeacher, TeacherSpec, cache_key, fingerprint, plan_batches, resolve_teacher
from storage import InputError
from storage.packaged import is_packaged

QUARRY = "quarry"
SENTENCE_TRANSFORMERS = "sentence-transformers"


def _config_name() -> str:
    from trainers.model import (
        CONFIG_NAME,  # imported here: trainers.model imports torch
    )

    return CONFIG_NAME


def is_quarry_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, _config_name()))


@dataclass(frozen=True)
class QuarryModelRef:
    """A folder ``EmbeddingModel.save_pretrained`` wrote."""

    name: str  # as the user gave it
    path: str  # a local folder (on an object-store root: the driver's cached copy)
    fingerprint: str
    max_length: int
    kind: str = QUARRY
    origin: tuple[str, str] | None = None  # (root uri, path inside it) of a model kept on an object store

    @property
    def cache_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(self.path.rstrip("/")) or "model").strip("-")
        key = hashlib.sha256(json.dumps([QUARRY, self.fingerprint, self.max_length]).encode()).hexdigest()[:12]
        return f"{slug[:60] or 'model'}-{key}"

    @property
    def label(self) -> str:
        return self.name

    def provenance(self) -> dict:
        return {"model": self.name, "kind": self.kind, "path": self.path, "fingerprint": self.fingerprint,
                "max_length": self.max_length}

    def key(self, instruction: str, text: str) -> str:
        """Cache key of one input; the instruction stays apart from the text (NUL between)."""
        return cache_key(f"{instruction}\x00{text}") if instruction else cache_key(text)

    def load(self, device: str | None = None, num_threads: int | None = None) -> "QuarryPairEncoder":
        return QuarryPairEncoder(self, device, num_threads)


class QuarryPairEncoder:
    """An ``EmbeddingModel`` that encodes (instruction, text) pairs in token-budget batches."""

    def __init__(self, ref: QuarryModelRef, device: str | None, num_threads: int | None):
        import torch

        from trainers.model import EmbeddingModel

        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        path = ref.path
        if ref.origin:  # this actor may run on another node than the driver: its own cached copy
            from storage import DataRoot
            from storage.published import fetch_dir

            path = fetch_dir(DataRoot.resolve(ref.origin[0]), ref.origin[1])
        self.model = EmbeddingModel.from_pretrained(path, max_length=ref.max_length).to(self.device).eval()
        self.dim = self.model.pooler_dim()

    def encode_pairs(self, instructions: list[str], texts: list[str], batch_size: int = 32,
                     max_batch_tokens: int | None = None) -> np.ndarray:
        """Each pair is tokenized once: its length plans the batches, its ids fill them."""
        import torch

        m = self.model
        pairs = m.encode_inputs(instructions, texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for rows in plan_batches([len(ids) for ids, _ in pairs], batch_size, max_batch_tokens or 1 << 62):
                feats = m.pad([pairs[i] for i in rows])
                out[rows] = m(**{k: v.to(self.device) for k, v in feats.items()}).float().cpu().numpy()
        return out


@dataclass(frozen=True)
class SentenceTransformerRef:
    """A sentence-transformers folder, hub id or packaged model: the teacher's loading path."""

    name: str
    resolved: ResolvedTeacher
    kind: str = SENTENCE_TRANSFORMERS

    @property
    def fingerprint(self) -> str:
        return self.resolved.fingerprint

    @property
    def max_length(self) -> int:
        return self.resolved.max_length

    @property
    def cache_name(self) -> str:
        # The teacher's own cache: what mining embedded is not embedded again.
        return self.resolved.cache_name

    @property
    def label(self) -> str:
        return self.name

    def provenance(self) -> dict:
        return {"model": self.name, "kind": self.kind, **self.resolved.provenance()}

    def key(self, instruction: str, text: str) -> str:
        return self.resolved.key(instruction, text)

    def load(self, device: str | None = None, num_threads: int | None = None):
        return self.resolved.load(device, num_threads)


ModelRef = QuarryModelRef | SentenceTransformerRef


def resolve_model(name: str, models_dir: str | None = None, max_length: int | None = None,
                  precision: str = AUTO) -> ModelRef:
    """A saved Quarry model (a folder, or a run name under ``models_dir``), else a
    sentence-transformers model (folder, hub id or ``packaged:``), at ``precision`` as the
    teacher (``miners.teacher``; auto resolved for CPU encoders, ``on_device`` resolves it
    again for others), so evaluating the teacher reads the vectors mining cached."""
    path = name
    if not os.path.isdir(path) and models_dir and not is_packaged(name) and os.path.isdir(os.path.join(models_dir, name)):
        path = os.path.join(models_dir, name)
    if os.path.isdir(path) and is_quarry_model(path):
        with open(os.path.join(path, _config_name()), encoding="utf-8") as f:
            configured = int(json.load(f).get("max_length") or 512)
        return QuarryModelRef(name=name, path=path, fingerprint=fingerprint(path), max_length=max_length or configured)
    if os.path.isdir(path) and not (os.path.isfile(os.path.join(path, "modules.json"))
                                    or os.path.isfile(os.path.join(path, "config.json"))):
        raise InputError(f"--model {name}: {path} is neither a saved Quarry model ({_config_name()}) nor a "
                         "sentence-transformers folder (modules.json or config.json)")
    spec = TeacherSpec(teacher=path, max_length=max_length, precision=precision)
    try:
        resolved = resolve_teacher(spec, role="--model")
    except InputError as e:
        if models_dir and "/" not in name and not is_packaged(name):  # could have been a run name
            raise InputError(f"{e} (nor a saved model under {models_dir})") from None
        raise
    return SentenceTransformerRef(name=name, resolved=resolved)
