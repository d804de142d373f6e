"""The shared encoding service: ``embed_missing`` embeds what an embedding cache lacks, on a
Ray Data actor pool or in the driver. Mining fills the teacher's cache through it, and
``quarry eval`` a model's own.

Only texts whose key is not cached are sent. They go in sorted by length, longest first,
so each batch pads to similar lengths (sentence-transformers does the same inside one
``encode`` call; across Ray batches it has to be done here) and a batch that would run
out of memory does so at once rather than at the end. Inside an actor, forward passes are
cut by a token budget (``Teacher.encode``), not a fixed row count. One model load per
actor; one actor per GPU, or one CPU actor using the node's cores, so read and write tasks
keep a CPU.

Where the encoding runs (``--encode-in``): ``actors`` is the pool above; ``driver`` encodes
in this process, with the same batching; ``auto`` (the default) picks the driver when one
encoder would run on the private local Ray this process started (``ensure_ray`` without
``RAY_ADDRESS``), where the pool adds its fixed cost and parallelises nothing, and the pool
everywhere else: a cluster joined through ``RAY_ADDRESS`` (a submitted job included, even
while an autoscaling cluster is only its head), several GPUs, ``--encoders 2``. Measured on
2 cores with the packaged teacher at bf16 (docs/benchmarks.md): a cold mine of the vital desc2article task took 121.7 s with the
driver encoding, 138.6 s with the pool; a 5% re-mine's 683 texts took 13.0 s through the
pool plus 1.5 s for its actor to exit, 10.1-12.2 s in the driver. What the pool alone
gives, a dead actor restarted and the teacher's memory leaving with it, matters on a
cluster.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Mapping, Protocol

import numpy as np
import pyarrow as pa

from miners.cache import EmbeddingCache, EmbedStats, embeddings_table
from pipelines.runtime.local_ray import on_private_local_ray, wait_for_local_exit
from pipelines.runtime.ordered_writes import block_sizes, write_blocks_ordered
from storage import ConfigError

log = logging.getLogger("quarry")

# Padded tokens per forward pass (rows x longest row). CPU: the MiniLM teacher on 2 cores
# encodes about 17% faster at 2,048 than at sentence-transformers' fixed 32 rows, with the
# same vectors to 1e-7 (docs/benchmarks.md). GPU: room for 64 passages of 512 tokens.
CPU_BATCH_TOKENS = 2048
GPU_BATCH_TOKENS = 32768
# A dead encoder actor (killed, out of memory, its node lost) is restarted and its
# unfinished batch retried; the output is the same as without the failure, because blocks
# are fixed before the pool starts and written in their own order. Ray Data's default is
# to restart and retry without limit, which turns a batch that kills every actor into a
# run that never ends; three of each, then the stage fails with Ray's error.
ENCODER_RESTARTS = 3
ENCODE_IN = ("auto", "driver", "actors")
DEFAULT_ENCODE_IN = "auto"
MISSING_SCHEMA = pa.schema([("key", pa.string()), ("instruction", pa.string()), ("text", pa.string())])
# Texts per slice of an encode in the driver: progress is logged after each.
DRIVER_SLICE_TEXTS = 4096


class EncoderRef(Protocol):
    """A model resolved in the driver that every actor loads alike: the teacher
    (``ResolvedTeacher``) or a model under evaluation (``evaluation.models``)."""

    def load(self, device: str | None, num_threads: int | None) -> "PairEncoder": ...


class PairEncoder(Protocol):
    def encode_pairs(self, instructions: list[str], texts: list[str], batch_size: int,
                     max_batch_tokens: int | None) -> np.ndarray: ...


class EncoderActor:
    """Ray Data callable class: (key, instruction, text) batches -> (key, embedding) batches."""

    def __init__(self, ref: EncoderRef, device: str | None, num_threads: int | None, batch_size: int,
                 max_batch_tokens: int | None = None):
        self.encoder = ref.load(device, num_threads)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.encoder.encode_pairs(batch.column("instruction").to_pylist(), batch.column("text").to_pylist(),
                                            self.batch_size, self.max_batch_tokens)
        return embeddings_table(batch.column("key").to_pylist(), vectors)


# The process title Ray gives an EncoderActor of a Ray Data actor pool.
ENCODER_TITLE = f"ray::MapWorker(MapBatches({EncoderActor.__name__}))"


@dataclass(frozen=True)
class EncoderShape:
    """The encoder actor pool for this cluster."""

    actors: int
    num_gpus: int  # per actor
    num_cpus: int  # per actor (Ray's accounting; torch may use more threads)
    device: str
    threads: int | None  # torch threads per actor (None: torch's default)
    max_batch_tokens: int  # default padded-token budget per forward pass


def encoder_shape() -> EncoderShape:
    """One actor per GPU, else one CPU actor."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    if gpus:
        return EncoderShape(actors=gpus, num_gpus=1, num_cpus=1, device="cuda", threads=None,
                            max_batch_tokens=GPU_BATCH_TOKENS)
    # One actor reserving one CPU leaves the others to Ray Data's read and write tasks (a
    # pool that reserves every CPU deadlocks them); torch still uses all the node's cores.
    # Measured on 2 cores: one 2-thread actor embeds 800 passages in 34 s, two 1-thread
    # actors in 50 s (their start-ups compete for the same cores).
    return EncoderShape(actors=1, num_gpus=0, num_cpus=1, device="cpu", threads=max(1, cpus),
                        max_batch_tokens=CPU_BATCH_TOKENS)


def check_encode_in(value: str) -> None:
    if value not in ENCODE_IN:
        raise ConfigError("encode_in", f"must be one of {', '.join(ENCODE_IN)}, got {value!r}")


def embed_missing(texts: Mapping[str, str | tuple[str, str]], cache: EmbeddingCache, model: EncoderRef,
                  batch_size: int, encoders: int | None = None, max_batch_tokens: int | None = None,
                  encode_in: str = DEFAULT_ENCODE_IN) -> EmbedStats:
    """Embed the entries the cache lacks; commit them as a new cache version.

    ``texts``: key -> text, or key -> (instruction, text) for inputs with an instruction the
    model attends to apart from the text. ``model``: the teacher, or a model under evaluation.

    ``max_batch_tokens``: padded tokens per forward pass; None picks the device's default,
    0 turns the budget off (every pass holds ``batch_size`` texts).

    ``encode_in``: auto, driver or actors (the module's docstring).
    """
    check_encode_in(encode_in)
    table = _missing(texts, cache.known_keys())
    stats = EmbedStats(texts=len(texts), cached=len(texts) - table.num_rows, embedded=table.num_rows)
    log.info("embed: %d texts, %d cached, %d to embed", len(texts), stats.cached, table.num_rows)
    if not table.num_rows:
        return stats
    shape = encoder_shape()
    concurrency = encoders or shape.actors
    budget = (shape.max_batch_tokens if max_batch_tokens is None else max_batch_tokens) or None
    stats.max_batch_tokens = budget
    passes = f"forward passes of at most {batch_size} texts" + (f" and {budget} padded tokens" if budget else "")
    if encode_in == "driver" or (encode_in == "auto" and concurrency == 1 and on_private_local_ray()):
        log.info("embed: %d texts in the driver on %s, %s", table.num_rows, shape.device, passes)
        _embed_in_driver(table, cache, model, shape, batch_size, budget, stats)
    else:
        log.info("embed: %d %s encoder(s), %s", concurrency, shape.device, passes)
        _embed_on_actors(table, cache, model, shape, concurrency, batch_size, budget, stats)
    return stats


def _missing(texts: Mapping[str, str | tuple[str, str]], known: set[str]) -> pa.Table:
    """(key, instruction, text) of the entries not cached, longest first."""
    missing = [(k, ("", t) if isinstance(t, str) else t) for k, t in texts.items() if k not in known]
    missing.sort(key=lambda kt: (-len(kt[1][0]) - len(kt[1][1]), kt[0]))
    return pa.table({"key": [k for k, _ in missing], "instruction": [it[0] for _, it in missing],
                     "text": [it[1] for _, it in missing]}, schema=MISSING_SCHEMA)


def _embed_on_actors(table: pa.Table, cache: EmbeddingCache, model: EncoderRef, shape: EncoderShape,
                     concurrency: int, batch_size: int, budget: int | None, stats: EmbedStats) -> None:
    """The Ray Data actor pool: blocks fixed before it starts, written in their own order."""
    import ray.data
    from ray.data import ActorPoolStrategy

    block_rows = max(batch_size, min(4096, -(-table.num_rows // max(4, 2 * concurrency))))
    blocks = [table.slice(i, block_rows) for i in range(0, table.num_rows, block_rows)]
    with warnings.catch_warnings():
        # Ray 2.60 warns that extra remote args (here the restart limits) go in 2.64, but
        # offers no named parameter for them yet, and its actor pool's own comments still
        # point here (ray/data/_internal/execution/operators/actor_pool_map_operator.py).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ray.data.from_arrow(blocks).map_batches(
            EncoderActor,
            fn_constructor_kwargs={"ref": model, "device": shape.device, "num_threads": shape.threads,
                                   "batch_size": batch_size, "max_batch_tokens": budget},
            batch_size=batch_size * 8, batch_format="pyarrow", compute=ActorPoolStrategy(size=concurrency),
            num_cpus=shape.num_cpus, num_gpus=shape.num_gpus,
            max_restarts=ENCODER_RESTARTS, max_task_retries=ENCODER_RESTARTS)
    refs = ds.to_arrow_refs()
    sizes = block_sizes(refs)
    cache.check_dim(ray.get(refs[0]).schema.field("embedding").type.list_size)

    def stage(writer) -> int:
        return write_blocks_ordered(refs, sizes, writer.staging_dir, writer.filesystem, rows_per_file=500_000)

    manifest, _ = cache.append(stage, asdict(stats))
    log.info("embed: cache embeddings/%s is now %s with %d vectors", cache.name, manifest.version, manifest.num_rows)
    refs.clear()  # the embedded blocks leave the object store
    del ds
    if not wait_for_local_exit(ENCODER_TITLE):
        log.warning("embed: an encoder actor of this machine had not exited 20 s after its stage ended")


def release_freed_memory() -> None:
    """Collect, then hand glibc's free heap back to the system. After an encode in the
    driver, glibc keeps the activations' memory: measured on 6,690 vital texts at bf16,
    the process held 1.10 GiB encoding, 1.02 GiB with the teacher deleted and collected,
    0.78 GiB after ``malloc_trim`` (torch and sentence-transformers imported: 0.55)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def _embed_in_driver(table: pa.Table, cache: EmbeddingCache, model: EncoderRef, shape: EncoderShape,
                     batch_size: int, budget: int | None, stats: EmbedStats) -> None:
    """The pool's work, in this process; the model is dropped afterwards."""
    import time

    encoder = model.load(shape.device, shape.threads)
    instructions, texts = table.column("instruction").to_pylist(), table.column("text").to_pylist()
    parts, start = [], time.perf_counter()
    for first in range(0, len(texts), DRIVER_SLICE_TEXTS):
        last = first + DRIVER_SLICE_TEXTS
        parts.append(encoder.encode_pairs(instructions[first:last], texts[first:last], batch_size, budget))
        if len(texts) > DRIVER_SLICE_TEXTS:
            done = min(last, len(texts))
            log.info("embed: %d of %d texts (%.0f texts/s)", done, len(texts), done / (time.perf_counter() - start))
    vectors = np.concatenate(parts)
    del encoder
    release_freed_memory()
    embedded = embeddings_table(table.column("key").to_pylist(), vectors)
    cache.check_dim(embedded.schema.field("embedding").type.list_size)

    def stage(writer) -> int:
        writer.write_table(embedded, max_rows_per_file=500_000)
        return embedded.num_rows

    manifest, _ = cache.append(stage, asdict(stats))
    log.info("embed: cache embeddings/%s is now %s with %d vectors", cache.name, manifest.version, manifest.num_rows)
