"""A small searcher around FAISS: build, search in batches, say what ran where.

Inner product over L2-normalised vectors (cosine). ``flat`` is exact and the default;
``ivf`` and ``hnsw`` are for large corpora. A GPU is used when faiss-gpu sees one, and the
log says so either way; HNSW has no GPU implementation and says that too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from storage import ConfigError, InputError

log = logging.getLogger("quarry")

INDEX_TYPES = ("flat", "ivf", "hnsw")
MIN_TRAIN_PER_LIST = 39  # FAISS's ClusteringParameters.min_points_per_centroid


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("FAISS is missing: pip install faiss-cpu (or faiss-gpu-cu12 via .[gpu])") from e
    return faiss


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "flat"
    nlist: int | None = None  # ivf: number of lists (default about 4*sqrt(n))
    nprobe: int = 16  # ivf: lists visited per query
    # ivf: k-means training points per list, a sample FAISS draws. FAISS's own cap is 256,
    # which at 4 sqrt(n) lists trains on every one of 1M passages: 266 s of a 1M build on 2
    # cores, the stage that grew worst. 64 (within FAISS's 39-256) took 64 s there with
    # the same recall@50 against flat (docs/benchmarks.md, "Mining at scale").
    train_per_list: int = 64
    hnsw_m: int = 32
    ef_search: int = 128
    use_gpu: bool | None = None  # None: when available

    def __post_init__(self) -> None:
        if self.kind not in INDEX_TYPES:
            raise ConfigError("kind", f"must be one of {', '.join(INDEX_TYPES)}, got {self.kind!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_search"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be at least 1, got {value}")
        if self.train_per_list < MIN_TRAIN_PER_LIST:
            raise ConfigError("train_per_list", f"must be at least {MIN_TRAIN_PER_LIST} (fewer, and FAISS's k-means "
                                                f"warns that it has too few points), got {self.train_per_list}")


class Searcher:
    def __init__(self, vectors: np.ndarray, cfg: IndexConfig = IndexConfig()):
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise InputError("cannot build a search index over an empty candidate pool")
        self.size, self.dim = vectors.shape
        self.cfg = cfg
        metric = faiss.METRIC_INNER_PRODUCT
        if cfg.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif cfg.kind == "ivf":
            nlist = cfg.nlist or max(1, min(int(4 * np.sqrt(self.size)), self.size // 39 or 1))
            index = faiss.index_factory(self.dim, f"IVF{nlist},Flat", metric)
            index.cp.max_points_per_centroid = cfg.train_per_list
            index.train(vectors)
            index.nprobe = min(cfg.nprobe, nlist)
        else:
            index = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, metric)
            index.hnsw.efSearch = cfg.ef_search
        index.add(vectors)
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        want_gpu = cfg.use_gpu if cfg.use_gpu is not None else gpus > 0
        if want_gpu and gpus == 0:
            raise InputError("a GPU index was asked for but FAISS sees no GPU (install faiss-gpu-cu12 via .[gpu])")
        self.device = "cpu"
        if want_gpu and cfg.kind == "hnsw":
            log.info("search: HNSW has no FAISS GPU implementation; it runs on the CPU")
        elif want_gpu:
            index = faiss.index_cpu_to_all_gpus(index)
            self.device = f"{gpus} GPU(s)"
        self.index = index
        log.info("search: FAISS %s index over %d vectors of dim %d on %s", cfg.kind, self.size, self.dim, self.device)

    def search(self, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions) per query, best first; k is capped at the pool size."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputError(f"query vectors have shape {queries.shape}, the index has dim {self.dim}")
        k = min(k, self.size)
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            s, i = self.index.search(queries[start:start + batch_size], k)
            scores[start:start + batch_size], ids[start:start + batch_size] = s, i
        return scores, ids


def brute_force_topk(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain reference: full score matrix, sorted (for tests and small checks only)."""
    scores = queries @ vectors.T
    k = min(k, vectors.shape[0])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order
