"""The teacher retriever: a sentence-transformers model, identified by what it is.

A teacher is resolved once, in the driver, to an exact local folder (a packaged model, a
local path, or a hub id's snapshot at a commit) and fingerprinted by the contents of its
files; the encoder actors then load that very folder. The cache key of an embedding is
(teacher fingerprint, max length, normalisation) for the dataset and the hash of the exact
string encoded for the row, so a prompt or an instruction prefix is part of the key and a
changed document is re-embedded alone.

Precision (``fp32``, ``bf16``) is part of what decides a vector, so it is part of
the cache key: vectors of two precisions never mix in one cache. ``auto`` picks bf16 where
the encoding CPU computes it natively (AVX-512 BF16 or AMX) and fp32 elsewhere, GPUs
included until bf16 is measured there (the figures are in docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import numpy as np

from storage import PACKAGED_MINILM, ConfigError, InputError, first_line
from storage.packaged import check_folder_or_hub_id, is_packaged, resolve_packaged
from storage.published import MARKER as PUBLISHED_MARKER

log = logging.getLogger("quarry")

DEFAULT_TEACHER = PACKAGED_MINILM
# Files up to this size are hashed in full (every encoder-sized teacher: 0.11 s for
# MiniLM's 87 MiB from disk). Larger weight files (a 7B model's 5-15 GB shards) are
# identified by their safetensors header (tensor names, dtypes, shapes, offsets) and 1,024
# blocks of 64 KiB spread evenly over the file: a retrained model changes every block, and
# on a 14.5 GB file this takes 0.21 s from disk where hashing every byte takes 17 s
# (benchmarks/teacher_fingerprint.py, docs/benchmarks.md).
FULL_HASH_BYTES = 2 << 30
SAMPLE_BLOCKS = 1024
SAMPLE_BYTES = 64 << 10
_CHUNK = 8 << 20
# Files Quarry writes beside a model it evaluated, reported on, trained (lineage.json, named
# in trainers.lineage) or published to an object store (the marker holds a fresh id per
# upload): never part of what it is.
NOT_MODEL_FILES = {"eval.json", "report.md", "lineage.json", PUBLISHED_MARKER}
# Hub files that never decide a sentence-transformers torch model's vectors.
_HUB_IGNORE = ["*.md", "onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*",
               "rust_model*", "coreml/*"]


def resolve_model_dir(name: str, revision: str | None = None, role: str = "teacher") -> tuple[str, str | None]:
    """(local folder, hub commit or None) for a packaged model, a local folder or a hub id.

    A hub id is resolved to a snapshot at a commit (downloaded, or from the local hub cache
    when offline), so a moving branch such as ``main`` never stands for two models.
    ``role`` names the model in errors: ``teacher`` for mining, ``--model`` for ``eval``.
    """
    if is_packaged(name):
        return resolve_packaged(name), None
    if os.path.isdir(name):
        return name, None
    check_folder_or_hub_id(name, role)
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id=name, revision=revision, ignore_patterns=_HUB_IGNORE)
    except (OSError, ValueError) as e:  # hub errors are OSErrors; a malformed id is a ValueError
        raise InputError(f"{role} {name!r} is neither a local folder nor a model the hub provides "
                         f"(revision {revision or 'main'}): {first_line(e)}") from None
    return path, os.path.basename(os.path.normpath(path))


def fingerprint(path: str, commit: str | None = None) -> str:
    """What the model in ``path`` is: every file's name, size and content digest.

    Documentation (``*.md``), dot files and Quarry's own reports (``eval.json``) are left
    out: they never change a vector. Large
    files are sampled (:func:`file_digest`).
    """
    digest = hashlib.sha256(f"commit:{commit or ''}\x00".encode())
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.endswith(".md") or name in NOT_MODEL_FILES:
                continue
            full = os.path.join(dirpath, name)
            size = os.path.getsize(full)
            digest.update(f"{os.path.relpath(full, path)}\x00{size}\x00".encode())
            digest.update(file_digest(full, size))
    return digest.hexdigest()[:16]


def file_digest(path: str, size: int | None = None) -> bytes:
    """sha256 of the whole file, or of its header and evenly spaced blocks when it is large."""
    size = os.path.getsize(path) if size is None else size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
            return digest.digest()
        digest.update(_header(f, path))
        last = size - SAMPLE_BYTES
        for i in range(SAMPLE_BLOCKS):
            f.seek(last * i // (SAMPLE_BLOCKS - 1))
            digest.update(f.read(SAMPLE_BYTES))
    return digest.digest()


def _header(f, path: str) -> bytes:
    """A safetensors file's JSON header (its whole table of tensors), else the first MiB."""
    f.seek(0)
    if path.endswith(".safetensors"):
        length = int.from_bytes(f.read(8), "little")
        if 0 < length <= 100 << 20:
            return f.read(length)
    f.seek(0)
    return f.read(1 << 20)


# How the teacher's forward passes compute:
# - fp32: the model as saved (sentence-transformers' default);
# - bf16: torch autocast to bfloat16 around fp32 weights. On an AVX-512 BF16 CPU it encodes
#   MiniLM 1.75x faster than fp32 (2,006 texts at the 2,048-token budget), on one with AMX
#   2.1-2.3x, with cosine >= 0.99996 to the fp32 vectors; weights cast to bf16 instead put
#   LayerNorm and softmax in bf16 too (cosine >= 0.9964). L2 normalisation stays in fp32.
# No int8: torch's dynamic quantisation quantises activations per batch, so a text's vector
# depends on the texts batched with it (cosine 0.90 between two batchings of one text),
# which a cache keyed by text cannot hold; optimum's int8 ONNX and OpenVINO exports do not
# install beside transformers 5 (docs/benchmarks.md).
PRECISIONS = ("fp32", "bf16")
AUTO = "auto"


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (else autocast emulates it, slowly).

    Read from /proc/cpuinfo where there is one, so the driver need not import torch (about
    0.3 GiB) to decide; torch's own check elsewhere.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        return bool({"avx512_bf16", "amx_bf16"} & set(flags))
    except OSError:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(requested: str, device: str) -> str:
    """``requested``, or for ``auto``: bf16 on a CPU with native bf16, fp32 on anything else
    (GPUs: not measured yet)."""
    if requested != AUTO:
        return requested
    return "bf16" if device == "cpu" and native_bf16_cpu() else "fp32"


@dataclass(frozen=True)
class TeacherSpec:
    """What the user asked for: everything that decides an embedding besides the text."""

    teacher: str = DEFAULT_TEACHER  # local folder, hub id, or a packaged model
    revision: str | None = None  # hub branch, tag or commit (default main)
    max_length: int | None = None  # None: the model's own max_seq_length
    normalize: bool = True
    precision: str = AUTO  # fp32, bf16, or auto (resolved per device by resolve_teacher)

    def __post_init__(self) -> None:
        if self.precision not in (AUTO, *PRECISIONS):
            raise ConfigError("precision", f"must be one of {', '.join((AUTO, *PRECISIONS))}, got {self.precision!r}")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError("max_length", f"must be at least 1, got {self.max_length}")

    def cache_name(self, fp: str, max_length: int) -> str:
        """Catalog name of the embedding cache for this teacher and settings.

        An fp32 key leaves precision out, which keeps every existing fp32 cache valid; any
        other precision is part of the key, so vectors of two precisions never mix.
        """
        if self.precision == AUTO:
            raise ValueError("resolve the teacher's precision before naming its cache")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", os.path.basename(self.teacher.rstrip("/")) or "teacher").strip("-")
        parts = [fp, max_length, self.normalize] + ([] if self.precision == "fp32" else [self.precision])
        key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
        return f"{slug[:60] or 'teacher'}-{key}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ResolvedTeacher:
    """What the driver found for a spec: the exact folder every encoder loads, and its identity."""

    spec: TeacherSpec  # its precision resolved: never auto
    path: str  # local folder
    commit: str | None  # hub commit, when the teacher came from the hub
    fingerprint: str
    max_length: int

    @property
    def cache_name(self) -> str:
        return self.spec.cache_name(self.fingerprint, self.max_length)

    @property
    def label(self) -> str:
        """How negatives name their teacher: the name as given and what it was."""
        return f"{self.spec.teacher}#{self.fingerprint}"

    @property
    def precision(self) -> str:
        return self.spec.precision

    def on_device(self, requested: str, device: str) -> "ResolvedTeacher":
        """This teacher with ``requested`` precision resolved for encoders on ``device`` (the
        driver resolves before Ray starts, so a bad teacher fails fast, and learns the
        encoders' device after)."""
        return replace(self, spec=replace(self.spec, precision=resolve_precision(requested, device)))

    def provenance(self) -> dict:
        return {"teacher": self.spec.as_dict(), "fingerprint": self.fingerprint, "max_length": self.max_length,
                "commit": self.commit}

    def key(self, instruction: str, text: str) -> str:
        """Cache key of one input: a sentence-transformers model sees the instruction as a
        prefix of the string (``prompt=``), so the key is the joined string's, as in mining."""
        return cache_key(instruction + text)

    def load(self, device: str | None = None, num_threads: int | None = None) -> "Teacher":
        return Teacher(self, device=device, num_threads=num_threads)


def resolve_teacher(spec: TeacherSpec, device: str = "cpu", role: str = "teacher") -> ResolvedTeacher:
    """Find the teacher's folder and fingerprint it; read its max length without loading
    weights when ``sentence_bert_config.json`` says it (the driver names the cache before
    any actor loads the model). ``device``: where the encoders will run, which decides what
    ``auto`` precision means. ``role``: how errors name the model."""
    spec = replace(spec, precision=resolve_precision(spec.precision, device))
    path, commit = resolve_model_dir(spec.teacher, spec.revision, role)
    fp = fingerprint(path, commit)
    max_length = spec.max_length or _configured_max_length(path)
    if not max_length:
        max_length = int(_load_sentence_transformer(spec.teacher, path, "cpu").max_seq_length)
    return ResolvedTeacher(spec=spec, path=path, commit=commit, fingerprint=fp, max_length=int(max_length))


def _configured_max_length(path: str) -> int | None:
    config = os.path.join(path, "sentence_bert_config.json")
    if not os.path.isfile(config):
        return None
    with open(config, encoding="utf-8") as f:
        return json.load(f).get("max_seq_length")


def _load_sentence_transformer(name: str, path: str, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except Exception as e:  # loaders raise OSError, ValueError, KeyError, HF errors...: name the teacher
        raise InputError(f"teacher {name!r} does not load: {first_line(e)}") from None


def cache_key(text: str) -> str:
    """Cache key of one encoded string (the exact string: prompt included)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class Teacher:
    """A loaded teacher. Encodes to float32 rows, L2-normalised when the spec says so."""

    def __init__(self, teacher: ResolvedTeacher | TeacherSpec, device: str | None = None,
                 num_threads: int | None = None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.resolved = teacher if isinstance(teacher, ResolvedTeacher) else resolve_teacher(teacher, device)
        self.spec = self.resolved.spec
        self.device = device
        self.model = _load_sentence_transformer(self.spec.teacher, self.resolved.path, device)
        self.model.max_seq_length = self.max_length = self.resolved.max_length
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @property
    def cache_name(self) -> str:
        return self.resolved.cache_name

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

    def encode_pairs(self, instructions: list[str], texts: list[str], batch_size: int = 64,
                     max_batch_tokens: int | None = None) -> np.ndarray:
        """(instruction, text) inputs: the instruction is a prefix of the string, as ``prompt=``."""
        return self.encode([i + t for i, t in zip(instructions, texts)], batch_size, max_batch_tokens)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the model will see it: special tokens in, truncated."""
        encoded = self.model.tokenizer(texts, truncation=True, max_length=self.max_length,
                                       return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def _forward(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        autocast = (torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16) if self.spec.precision == "bf16"
                    else nullcontext())
        with autocast:
            out = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=False, show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)
        if self.spec.normalize:  # in fp32 whatever the forward pass computed in
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


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
