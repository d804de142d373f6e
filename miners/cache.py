"""The embedding cache: an append-only ``embeddings/<teacher-key>`` dataset in the catalog.

Rows: ``key`` (hash of the exact string encoded), ``embedding`` (float32[dim]). Each new
version carries the files of the previous one by reference and adds the new rows, so a
version is a complete snapshot, nothing is copied, and it is queryable like any dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage import Catalog, CatalogError, InputRef, Manifest
from storage.schemas import embeddings_schema

KIND = "embeddings"


@dataclass
class EmbedStats:
    """What one embedding pass did: recorded in the cache version and the negatives manifest."""

    texts: int  # distinct strings the run needed
    cached: int  # found in the cache
    embedded: int  # encoded now
    max_batch_tokens: int | None = None  # padded-token budget of the new forward passes (None: off, or none ran)

    def summary(self) -> str:
        return f"embedded {self.embedded} new texts ({self.cached} of {self.texts} cached)"


def embeddings_table(keys: list[str], vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.table([pa.array(keys, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim)],
                    schema=embeddings_schema(dim))


@dataclass
class EmbeddingCache:
    catalog: Catalog
    name: str
    dim: int | None  # None until learnt from the cache or from the first embeddings
    config: dict  # the teacher spec, fingerprint and max length: recorded in every version

    def latest(self) -> Manifest | None:
        version = self.catalog.latest(KIND, self.name)
        if version is None:
            return None
        manifest = self.catalog.manifest(KIND, self.name, version)
        self.check_dim(manifest.config.get("dim"))
        return manifest

    def check_dim(self, dim: int | None) -> None:
        """Adopt ``dim`` if unknown, else insist it matches: one cache, one vector size."""
        if dim is None:
            return
        if self.dim is None:
            self.dim = int(dim)
        elif int(dim) != self.dim:
            raise CatalogError(f"embedding cache {KIND}/{self.name} holds {self.dim}-dimensional vectors "
                               f"but the teacher gives {dim}: the cache belongs to another model")

    def known_keys(self) -> set[str]:
        m = self.latest()
        if m is None:
            return set()
        return set(self.catalog.read_table(KIND, self.name, m.version, columns=["key"]).column("key").to_pylist())

    def load(self, keys: list[str]) -> np.ndarray:
        """Vectors for ``keys``, in that order (every key must be cached)."""
        if self.latest() is None:
            raise CatalogError(f"embedding cache {KIND}/{self.name} is empty")
        present, vectors = self.load_present(keys)
        if not present.all():
            raise CatalogError(f"embedding cache {KIND}/{self.name} lacks {int((~present).sum())} of the requested keys")
        return vectors

    def load_present(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Which of ``keys`` the latest version holds (bool per key), and their vectors in
        key order (one row per True); an empty cache holds none."""
        m = self.latest()
        if m is None:
            return np.zeros(len(keys), dtype=bool), np.zeros((0, self.dim or 0), np.float32)
        wanted = pa.array(keys, pa.string())
        table = self.catalog.arrow_dataset(KIND, self.name, m.version).to_table(
            filter=pc.field("key").isin(pc.unique(wanted)))
        # Row of each wanted key, found in Arrow rather than through a Python dict of every key.
        at = pc.index_in(wanted, value_set=table.column("key"))
        present = at.is_valid().to_numpy(zero_copy_only=False)
        matrix = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return present, matrix.reshape(table.num_rows, self.dim)[at.drop_null().to_numpy()]

    def append(self, staging_write, stats: dict) -> tuple[Manifest, bool]:
        """Commit a new version: the previous files plus what ``staging_write(writer)`` stages.

        Returns (manifest, appended). Nothing new to add leaves the cache as it is.
        """
        previous = self.latest()
        with self.catalog.writer(KIND, self.name) as writer:
            rows = staging_write(writer)
            if rows == 0:
                writer.abort()
                return previous, False
            carry = [(previous.version, f) for f in previous.files] if previous else []
            manifest = writer.commit(config={**self.config, "dim": self.dim}, stats=stats, carry=carry)
            return manifest, True

    def input_ref(self) -> InputRef | None:
        m = self.latest()
        return m.input_ref() if m else None
