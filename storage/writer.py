"""Atomic creation of a dataset version.

A writer stages Parquet files in ``<dataset>/_staging/<txn>/`` (Ray Data writes straight
into ``writer.staging_dir``; small tables go through ``write_table``). ``commit()`` then

1. checks every staged file has the same schema, counts rows, hashes the bytes;
2. claims the next version number atomically: ``mkdir`` of its directory on a local root, a
   conditional PUT (``If-None-Match: *``) of ``<version>/_claim.json`` on S3; a writer that
   loses the race takes the next number, so concurrent writers never share a version;
3. moves the files in as ``part-NNNNN.parquet``;
4. writes ``_manifest.json`` last: that single write is the commit point.

A crash before step 4 leaves nothing a reader can see; ``quarry datasets --gc`` removes the
debris and a re-run simply builds again under a fresh transaction id.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.catalog import Catalog, utc_now
from storage.errors import CatalogError
from storage.exclusive import create_exclusive, supports_exclusive_create
from storage.manifest import MANIFEST_NAME, FileEntry, InputRef, Manifest, describe_schema, encode_schema
from storage.names import format_version, validate_name
from storage.provenance import code_version

CLAIM_NAME = "_claim.json"  # object stores: the version number's owner (see _claim_version)
ATTACHED_DIRS = "_attached"  # staged folders published beside the parts (attach_dir)


class DatasetWriter:
    def __init__(self, catalog: Catalog, kind: str, name: str, txn: str | None = None):
        self.catalog = catalog
        self.root = catalog.root
        self.kind = kind
        self.name = name
        self.txn = validate_name(txn, "transaction id") if txn else uuid.uuid4().hex[:16]
        self.staging_dir = posixpath.join(catalog.staging_path(kind, name), self.txn)
        self.root.fs.create_dir(self.staging_dir, recursive=True)
        self._table_parts = 0
        self._attachments: dict[str, bytes] = {}
        self._attached_dirs: list[str] = []
        self.state = "open"
        self.unchanged = False  # set by commit(skip_if_unchanged=True) when nothing changed

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self.root.fs

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving the block without a commit (an error, or an early return) discards the
        # staged files, so nothing half-written can ever be committed later by accident.
        if self.state == "open":
            self.abort()

    def write_table(self, table: pa.Table, max_rows_per_file: int = 1_000_000) -> None:
        self._check_open()
        for offset in range(0, max(table.num_rows, 1), max_rows_per_file):
            part = table.slice(offset, max_rows_per_file)
            path = posixpath.join(self.staging_dir, f"w{self._table_parts:06d}.parquet")
            pq.write_table(part, path, filesystem=self.root.fs)
            self._table_parts += 1

    def attach(self, filename: str, data: bytes) -> None:
        """A file (report, plot) published inside the version folder with the commit."""
        self._check_open()
        validate_name(filename, "attachment name")
        if filename.endswith(".parquet") or filename == MANIFEST_NAME:
            raise CatalogError(f"attachment name {filename!r} is reserved")
        self._attachments[filename] = data

    def attach_dir(self, name: str, local_dir: str) -> None:
        """A folder (a ``datasets.save_to_disk`` output, say) published inside the version
        folder with the commit; it is copied into the staging area now."""
        self._check_open()
        validate_name(name, "attachment name")
        if name in self._attached_dirs or name in self._attachments:
            raise CatalogError(f"attachment {name!r} is attached twice")
        pafs.copy_files(local_dir, posixpath.join(self.staging_dir, ATTACHED_DIRS, name),
                        destination_filesystem=self.root.fs)
        self._attached_dirs.append(name)

    def staged_files(self) -> list[str]:
        infos = self.root.fs.get_file_info(pafs.FileSelector(self.staging_dir, recursive=True))
        attached = posixpath.join(self.staging_dir, ATTACHED_DIRS) + "/"
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                      and not i.path.startswith(attached))

    def abort(self) -> None:
        if self.state != "open":
            return
        if self.root.exists(self.staging_dir):
            self.root.fs.delete_dir(self.staging_dir)
        self._drop_empty_staging_parent()
        self.state = "aborted"

    def commit(
        self,
        config: dict[str, Any] | None = None,
        inputs: Iterable[InputRef] = (),
        stats: dict[str, Any] | None = None,
        skip_if_unchanged: bool = False,
        allow_empty: bool = False,
        carry: Iterable[tuple[str, FileEntry]] = (),
    ) -> Manifest:
        """Publish the staged files as the next version and return its manifest.

        With ``skip_if_unchanged``, a build whose bytes and config equal the latest version
        is dropped and the latest manifest is returned (``self.unchanged`` is then True).
        ``carry``: (version, file) pairs of earlier versions of this dataset that the new
        version includes by reference, before the staged files (an append-only dataset
        such as the embedding cache grows by one file per version without copying).
        """
        self._check_open()
        entries, schema = self._inspect(self.staged_files())
        carried = [(v, f) for v, f in carry]
        if carried:
            schema = self._check_carried(carried, schema, bool(entries))
        num_rows = sum(e[1] for e in entries) + sum(f.rows for _, f in carried)
        if num_rows == 0 and not allow_empty:
            self.abort()
            raise CatalogError(f"refusing to commit an empty version of {self.kind}/{self.name}: "
                               "no rows were written")
        file_hashes = [self.root.sha256(e[0]) for e in entries]
        # Paths stay relative to the new version folder; normpath also resolves files that
        # version v itself carried ("../v0002/../v0001/part-00000.parquet" -> "../v0001/...").
        carried_entries = [FileEntry(posixpath.normpath(posixpath.join("..", v, f.path)), f.rows, f.bytes, f.sha256)
                           for v, f in carried]
        content_hash = _combine([f.sha256 for f in carried_entries] + file_hashes)
        config = config or {}
        if skip_if_unchanged:
            unchanged = self._unchanged_latest(content_hash, config)
            if unchanged is not None:
                return unchanged
        version, version_dir = self._claim_version()
        file_entries = carried_entries + self._move_staged(entries, file_hashes, version_dir)
        manifest = Manifest(
            kind=self.kind, name=self.name, version=version, created_at=utc_now(),
            num_rows=num_rows, num_bytes=sum(e.bytes for e in file_entries),
            content_hash=content_hash, schema=describe_schema(schema), files=file_entries,
            config=jsonable(config), inputs=list(inputs), stats=jsonable(stats or {}),
            attachments=sorted([*self._attachments, *self._attached_dirs]), code_version=code_version(),
            arrow_schema=encode_schema(schema),
        )
        self.root.write_bytes_atomic(posixpath.join(version_dir, MANIFEST_NAME), manifest.to_json())
        self.state = "committed"
        if self.root.exists(self.staging_dir):
            self.root.fs.delete_dir(self.staging_dir)
        self._drop_empty_staging_parent()
        return manifest

    def _unchanged_latest(self, content_hash: str, config: dict) -> Manifest | None:
        """The latest manifest when its bytes and config equal this build's (the build is
        then dropped), else None."""
        latest = self.catalog.latest(self.kind, self.name)
        if not latest:
            return None
        prev = self.catalog.manifest(self.kind, self.name, latest)
        if prev.content_hash != content_hash or prev.config != jsonable(config):
            return None
        self.abort()
        self.unchanged = True
        return prev

    def _move_staged(self, entries: list[tuple[str, int, int]], file_hashes: list[str],
                     version_dir: str) -> list[FileEntry]:
        """The staged files and attachments into the claimed version folder, before its
        manifest (which is what makes the version visible)."""
        moved = []
        for i, ((src, rows, size), digest) in enumerate(zip(entries, file_hashes)):
            rel = f"part-{i:05d}.parquet"
            self.root.fs.move(src, posixpath.join(version_dir, rel))
            moved.append(FileEntry(rel, rows, size, digest))
        for filename, data in self._attachments.items():
            self.root.write_bytes_atomic(posixpath.join(version_dir, filename), data)
        for name in self._attached_dirs:
            source = posixpath.join(self.staging_dir, ATTACHED_DIRS, name)
            infos = self.root.fs.get_file_info(pafs.FileSelector(source, recursive=True))
            for info in infos:  # file by file: object stores move files, not folders
                if info.type == pafs.FileType.File:
                    target = posixpath.join(version_dir, name, posixpath.relpath(info.path, source))
                    self.root.fs.create_dir(posixpath.dirname(target), recursive=True)
                    self.root.fs.move(info.path, target)
        return moved

    # -- internals ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.state != "open":
            raise CatalogError(f"writer for {self.kind}/{self.name} is already {self.state}")

    def _inspect(self, files: list[str]) -> tuple[list[tuple[str, int, int]], pa.Schema]:
        entries: list[tuple[str, int, int]] = []
        schema: pa.Schema | None = None
        first = None
        for path in files:
            meta = pq.read_metadata(path, filesystem=self.root.fs)
            file_schema = meta.schema.to_arrow_schema().remove_metadata()
            if meta.num_rows == 0 and len(files) > 1:
                continue  # an empty block from a distributed writer carries no data
            if schema is None:
                schema, first = file_schema, path
            elif not file_schema.equals(schema):
                self.abort()
                raise CatalogError(
                    f"staged files of {self.kind}/{self.name} disagree on schema: "
                    f"{posixpath.basename(first)} has {schema.to_string(show_schema_metadata=False)!r}, "
                    f"{posixpath.basename(path)} has {file_schema.to_string(show_schema_metadata=False)!r}")
            entries.append((path, meta.num_rows, self.root.fs.get_file_info(path).size))
        if schema is None:
            schema = pa.schema([])
        return entries, schema

    def _check_carried(self, carried: list[tuple[str, FileEntry]], schema: pa.Schema, have_staged: bool) -> pa.Schema:
        versions = {v for v, _ in carried}
        for v in versions:
            if v not in self.catalog.versions(self.kind, self.name):
                raise CatalogError(f"cannot carry files of {self.kind}/{self.name} {v}: not a committed version")
        old = self.catalog.manifest(self.kind, self.name, sorted(versions)[-1]).arrow()
        if have_staged and old is not None and not old.equals(schema):
            self.abort()
            raise CatalogError(f"new files of {self.kind}/{self.name} do not match the schema of the files "
                               f"carried from earlier versions")
        return schema if have_staged else old

    def _claim_version(self) -> tuple[str, str]:
        """Claim the next version number; failing to create its claim means another writer
        won it, and the next number is tried."""
        base = self.catalog.dataset_path(self.kind, self.name)
        for _ in range(100):
            numbers = self.catalog.all_version_numbers(self.kind, self.name)
            version = format_version(max(numbers, default=0) + 1)
            path = posixpath.join(base, version)
            if self.root.is_local:
                try:
                    os.mkdir(path)
                except FileExistsError:
                    continue
            elif supports_exclusive_create(self.root):
                claim = json.dumps({"txn": self.txn, "claimed_at": utc_now()}).encode()
                if not create_exclusive(self.root, posixpath.join(path, CLAIM_NAME), claim):
                    continue
            else:
                # No atomic create on this filesystem: safe for one writer per dataset only
                # (docs/storage.md).
                if self.root.exists(path):
                    continue
                self.root.fs.create_dir(path)
            return version, path
        raise CatalogError(f"could not claim a new version of {self.kind}/{self.name}")

    def _drop_empty_staging_parent(self) -> None:
        parent = posixpath.dirname(self.staging_dir)
        if self.root.is_local and self.root.is_dir(parent) and not self.root.list_dir(parent):
            try:
                os.rmdir(parent)
            except OSError:
                pass  # another writer staged in the meantime: its area stays


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so a value compares equal to what a manifest recorded."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _combine(file_hashes: list[str]) -> str:
    outer = hashlib.sha256()
    for h in file_hashes:
        outer.update(bytes.fromhex(h))
    return "sha256:" + outer.hexdigest()
