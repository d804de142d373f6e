"""The catalog: named, versioned Parquet datasets under a data root.

Layout::

    <root>/<kind>/<name>/<version>/part-00000.parquet ...
    <root>/<kind>/<name>/<version>/_manifest.json     # commit marker
    <root>/<kind>/<name>/_staging/<txn>/               # writes in progress

A version exists for readers only once its manifest is written, which is the last step of
a commit (see ``storage.writer``).

Tested by tests/storage/test_catalog.py and tests/storage/test_object_store.py.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs

from storage.errors import CatalogError
from storage.manifest import MANIFEST_NAME, Manifest
from storage.names import is_version, validate_kind, validate_name, validate_version, version_number
from storage.root import DataRoot

if TYPE_CHECKING:
    from storage.writer import DatasetWriter

STAGING_DIR = "_staging"


@dataclass(frozen=True)
class DatasetRef:
    kind: str
    name: str
    version: str


class Catalog:
    def __init__(self, root: DataRoot | str | None = None):
        self.root = root if isinstance(root, DataRoot) else DataRoot.resolve(root)

    # -- paths -------------------------------------------------------------------------
    def dataset_path(self, kind: str, name: str) -> str:
        return self.root.path(validate_kind(kind), validate_name(name))

    def version_path(self, kind: str, name: str, version: str) -> str:
        return posixpath.join(self.dataset_path(kind, name), validate_version(version))

    def staging_path(self, kind: str, name: str) -> str:
        return posixpath.join(self.dataset_path(kind, name), STAGING_DIR)

    # -- listing -----------------------------------------------------------------------
    def kinds(self) -> list[str]:
        return [i.base_name for i in self.root.list_dir(self.root.base)
                if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))]

    def names(self, kind: str) -> list[str]:
        return [i.base_name for i in self.root.list_dir(self.root.path(validate_kind(kind)))
                if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))
                and self.versions(kind, i.base_name)]

    def versions(self, kind: str, name: str) -> list[str]:
        """Committed versions, oldest first."""
        out = []
        for info in self.root.list_dir(self.dataset_path(kind, name)):
            if is_version(info.base_name) and self.root.exists(posixpath.join(info.path, MANIFEST_NAME)):
                out.append(info.base_name)
        return sorted(out, key=version_number)

    def all_version_numbers(self, kind: str, name: str) -> list[int]:
        """Every version directory, committed or not (used so an aborted number is never reused)."""
        return [version_number(i.base_name) for i in self.root.list_dir(self.dataset_path(kind, name))
                if is_version(i.base_name)]

    def iter_datasets(self, kind: str | None = None) -> Iterator[tuple[str, str]]:
        for k in ([validate_kind(kind)] if kind else self.kinds()):
            for n in self.names(k):
                yield k, n

    def exists(self, kind: str, name: str) -> bool:
        return bool(self.versions(kind, name))

    # -- reading -----------------------------------------------------------------------
    def resolve(self, kind: str, name: str, version: str | None = None) -> DatasetRef:
        if version not in (None, "latest"):
            validate_version(version)
        versions = self.versions(kind, name)
        if not versions:
            raise CatalogError(f"no {kind} dataset named {name!r} in {self.root.uri} "
                               f"(see `quarry datasets`)")
        if version is None or version == "latest":
            return DatasetRef(kind, name, versions[-1])
        if version not in versions:
            raise CatalogError(f"{kind}/{name} has no committed version {version} "
                               f"(have: {', '.join(versions)})")
        return DatasetRef(kind, name, version)

    def latest(self, kind: str, name: str) -> str | None:
        versions = self.versions(kind, name)
        return versions[-1] if versions else None

    def manifest(self, kind: str, name: str, version: str | None = None) -> Manifest:
        ref = self.resolve(kind, name, version)
        path = posixpath.join(self.version_path(ref.kind, ref.name, ref.version), MANIFEST_NAME)
        return Manifest.from_json(self.root.read_bytes(path))

    def files(self, kind: str, name: str, version: str | None = None) -> list[str]:
        """Absolute (in-filesystem) paths of a version's Parquet files."""
        m = self.manifest(kind, name, version)
        base = self.version_path(kind, name, m.version)
        return [posixpath.normpath(posixpath.join(base, f.path)) for f in m.files]

    def verify(self, kind: str, name: str, version: str | None = None) -> Manifest:
        """Check every file of a version against the size and sha256 its manifest recorded
        at commit; a missing or changed file is a CatalogError naming it."""
        m = self.manifest(kind, name, version)
        for entry, path in zip(m.files, self.files(kind, name, m.version)):
            where = f"{kind}/{name} {m.version}: {entry.path}"
            info = self.root.fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise CatalogError(f"{where} is missing")
            if info.size != entry.bytes or self.root.sha256(path) != entry.sha256:
                raise CatalogError(f"{where} does not match its manifest (size or sha256 changed "
                                   "since the commit): the version is damaged")
        return m

    def attachment_path(self, kind: str, name: str, version: str, attachment: str) -> str:
        m = self.manifest(kind, name, version)
        if attachment not in m.attachments:
            raise CatalogError(f"{kind}/{name} {m.version} has no attachment {attachment!r}")
        return posixpath.join(self.version_path(kind, name, m.version), attachment)

    def arrow_dataset(self, kind: str, name: str, version: str | None = None) -> pds.Dataset:
        m = self.manifest(kind, name, version)
        files = self.files(kind, name, m.version)
        return pds.dataset(files, schema=m.arrow(), filesystem=self.root.fs, format="parquet")

    def read_table(self, kind: str, name: str, version: str | None = None,
                   columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        return self.arrow_dataset(kind, name, version).to_table(columns=columns, filter=filter)

    # -- writing -----------------------------------------------------------------------
    def writer(self, kind: str, name: str, **kwargs: Any) -> "DatasetWriter":
        from storage.writer import DatasetWriter

        return DatasetWriter(self, kind, name, **kwargs)

    def write_table(self, kind: str, name: str, table: pa.Table, **commit_kwargs: Any) -> Manifest:
        """Write and commit one table as a new version (small data, tests, reports)."""
        with self.writer(kind, name) as w:
            w.write_table(table)
            return w.commit(**commit_kwargs)

    def gc(self) -> list[str]:
        """Remove staging areas and uncommitted version directories left by crashed writers.

        Only safe while no writer is running against this root; the CLI says so.
        """
        removed = []
        for kind in self.kinds():
            for info in self.root.list_dir(self.root.path(kind)):
                ds_path = info.path
                for child in self.root.list_dir(ds_path):
                    stale = child.base_name == STAGING_DIR or (
                        is_version(child.base_name)
                        and not self.root.exists(posixpath.join(child.path, MANIFEST_NAME)))
                    if stale:
                        self.root.fs.delete_dir(child.path)
                        removed.append(child.path)
        return removed


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


__all__ = ["Catalog", "DatasetRef", "human_bytes", "utc_now"]
