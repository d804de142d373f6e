"""The data root: where every dataset lives, on any pyarrow filesystem.

Resolution order: an explicit ``--root``, then ``$QUARRY_HOME``, then ``./quarry-data``.
A value with a scheme (``file:///data/q``, ``s3://bucket/prefix``) goes through
``pyarrow.fs.FileSystem.from_uri``; a plain path is a local directory.

Tested by tests/storage/test_object_store.py.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass

import pyarrow.fs as pafs

DEFAULT_ROOT = "./quarry-data"


@dataclass(frozen=True)
class DataRoot:
    fs: pafs.FileSystem
    base: str  # path inside ``fs``, without a trailing slash
    uri: str  # the root as the user gave it, for messages and provenance

    @classmethod
    def resolve(cls, root: str | None = None) -> "DataRoot":
        given = root or os.environ.get("QUARRY_HOME") or DEFAULT_ROOT
        if "://" in given:
            fs, path = pafs.FileSystem.from_uri(given)
        else:
            fs, path = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(given))
        return cls(fs=fs, base=path.rstrip("/") or "/", uri=given)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    def display(self, path: str) -> str:
        """``path`` as a user names it: a local path as is, else ``scheme://bucket/...``
        (without the root's query string, which holds connection settings)."""
        return path if self.is_local else f"{self.uri.split('://', 1)[0]}://{path}"

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.Directory

    def list_dir(self, path: str) -> list[pafs.FileInfo]:
        """Immediate children of ``path`` (empty if it does not exist), sorted by name."""
        if not self.is_dir(path):
            return []
        # allow_not_found: another writer may remove the folder between the two calls.
        infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        return sorted(infos, key=lambda i: i.base_name)

    def sha256(self, path: str, chunk: int = 8 << 20) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while block := f.read(chunk):
                digest.update(block)
        return digest.hexdigest()

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write a small file so that readers see either nothing or all of it.

        Local: write a temporary sibling, fsync, rename. Object stores: a single PUT is atomic.
        """
        if self.is_local:
            tmp = f"{path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
