"""Folders that libraries read from local disk (saved models), kept on any data root.

On a local root a folder is published by one rename, and read in place. An object store
has no rename, so there a folder is published by uploading its files and then, last, a
marker (``_published.json``) listing them with a fresh id. Readers only take a folder with
a marker, and copy it into the local cache once per id (``fetch_dir``), because
transformers and peft load from local paths only.

The local cache is ``$QUARRY_CACHE`` (default ``~/.cache/quarry``), one folder per data
root: ``<cache>/<sha256(root uri)[:12]>/<path inside the root>``. Training also keeps its
rank-0 logs there on an object-store root (``trainers.run_files.RunFiles.work_dir``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import shutil
import uuid

import pyarrow.fs as pafs

from storage.errors import InputError
from storage.names import is_valid_name
from storage.root import DataRoot

MARKER = "_published.json"


def cache_base() -> str:
    return os.environ.get("QUARRY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "quarry")


def local_mirror(root: DataRoot, path: str) -> str:
    """Where ``path`` (inside ``root``) is copied to on this machine."""
    key = hashlib.sha256(root.uri.encode("utf-8")).hexdigest()[:12]
    return os.path.join(cache_base(), key, posixpath.relpath(path, root.base))


def upload_dir(root: DataRoot, local_dir: str, path: str) -> None:
    """Copy every file under ``local_dir`` to ``path`` on the root (no marker, no deletes)."""
    pafs.copy_files(local_dir, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=root.fs)


def download_file(root: DataRoot, path: str, target: str) -> None:
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with root.fs.open_input_stream(path) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 8 << 20)


def download_dir(root: DataRoot, path: str, local_dir: str) -> None:
    """Copy every file under ``path`` on the root into ``local_dir`` (folders made as needed)."""
    for info in root.fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            download_file(root, info.path, os.path.join(local_dir, *posixpath.relpath(info.path, path).split("/")))


def publish_dir(root: DataRoot, local_dir: str, path: str) -> None:
    """Make the folder ``local_dir`` appear whole at ``path`` on an object-store root.

    The old marker goes first and the new one last, so a reader sees the old folder, no
    folder, or the new one, never a mix (the files in between are unmarked)."""
    if root.is_local:
        raise ValueError("publish_dir is for object-store roots; a local folder is published by a rename")
    files = {}
    for base, _, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(base, name)
            files[os.path.relpath(full, local_dir).replace(os.sep, "/")] = os.path.getsize(full)
    if root.is_dir(path):
        marker = posixpath.join(path, MARKER)
        if root.exists(marker):
            root.fs.delete_file(marker)
        root.fs.delete_dir_contents(path)
    upload_dir(root, local_dir, path)
    record = {"id": uuid.uuid4().hex, "files": dict(sorted(files.items()))}
    root.write_bytes_atomic(posixpath.join(path, MARKER), json.dumps(record, indent=1).encode("utf-8"))


def is_published(root: DataRoot, path: str) -> bool:
    """A folder a reader may take: any folder on a local root, a marked one on an object store."""
    return root.is_dir(path) if root.is_local else root.exists(posixpath.join(path, MARKER))


def saved_model(root: DataRoot, name: str) -> str | None:
    """``<root>/models/<name>`` when ``name`` is a run name whose model is published there."""
    if not is_valid_name(name):
        return None
    path = root.path("models", name)
    return path if is_published(root, path) else None


def fetch_dir(root: DataRoot, path: str) -> str:
    """A local folder holding the published folder ``path``: itself on a local root, else
    this machine's cached copy, downloaded when the root holds a newer one."""
    if root.is_local:
        return path
    marker_path = posixpath.join(path, MARKER)
    if not root.exists(marker_path):
        raise InputError(f"{root.uri}: {posixpath.relpath(path, root.base)} is not a complete published folder "
                         f"(no {MARKER})")
    marker = root.read_bytes(marker_path)
    local = local_mirror(root, path)
    os.makedirs(os.path.dirname(local), exist_ok=True)
    # One copy per node at a time: the training workers (and encoder actors) of one node all
    # fetch the same model at start, and a folder swapped while another reads it would fail.
    with open(f"{local}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cached_marker(local) == marker:
            return local
        record = json.loads(marker)
        staged = f"{local}.partial-{os.getpid()}"
        shutil.rmtree(staged, ignore_errors=True)
        os.makedirs(staged)
        for rel in record["files"]:
            download_file(root, posixpath.join(path, rel), os.path.join(staged, *rel.split("/")))
        with open(os.path.join(staged, MARKER), "wb") as f:
            f.write(marker)  # last: a copy without it is never taken as complete
        replace_dir(staged, local)
    return local


def _cached_marker(local: str) -> bytes | None:
    try:
        with open(os.path.join(local, MARKER), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def replace_dir(staged: str, final: str) -> None:
    """Publish the local folder ``staged`` as ``final``. An older ``final`` is renamed aside
    first and removed after, so ``final`` is never a mix of the two."""
    old = None
    if os.path.exists(final):
        old = f"{os.path.dirname(final)}/.{os.path.basename(final)}.old-{os.getpid()}"
        os.rename(final, old)
    os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    os.rename(staged, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)
