"""What identifying a teacher by its weights costs: the packaged MiniLM, and a 7B-size file.

    python benchmarks/teacher_fingerprint.py [--gib 14.5] [--folder /tmp/fp-bench] [--keep]

Writes a safetensors file of Mistral-7B's bf16 size (14.5 GB by default: a JSON header,
then random bytes) and times, on it and on the packaged MiniLM folder:
- ``fingerprint`` as Quarry runs it (full hash up to 2 GiB, header + 1,024 x 64 KiB blocks above);
- a full sha256 of every byte, the alternative;
each with the file in the page cache (warm) and evicted from it with posix_fadvise (cold,
as after a fresh download or on another node). A benchmark, not a test: record the figures
and the machine in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from miners import teacher as teacher_module  # noqa: E402
from miners.teacher import fingerprint  # noqa: E402
from storage import PACKAGED_MINILM, resolve_packaged  # noqa: E402

CHUNK = 64 << 20


def write_model(folder: str, size: int) -> str:
    """A safetensors-shaped file of ``size`` bytes (header naming bf16 tensors, random data)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.safetensors")
    tensors, offset, i = {}, 0, 0
    per_tensor = 4096 * 14336 * 2  # one bf16 MLP matrix of Mistral-7B
    while offset < size - (1 << 20):
        n = min(per_tensor, size - (1 << 20) - offset)
        tensors[f"layers.{i}.weight"] = {"dtype": "BF16", "shape": [n // 2], "data_offsets": [offset, offset + n]}
        offset, i = offset + n, i + 1
    header = json.dumps(tensors).encode()
    header += b" " * (-len(header) % 8)
    block = os.urandom(CHUNK)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        written = 0
        while written < offset:
            n = min(CHUNK, offset - written)
            f.write(block[:n])
            written += n
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "mistral"}, f)
    return path


def evict(folder: str) -> None:
    """Drop the folder's files from the page cache (no root needed)."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def full_sha256(folder: str) -> str:
    digest = hashlib.sha256()
    for dirpath, _, names in sorted(os.walk(folder)):
        for name in sorted(names):
            with open(os.path.join(dirpath, name), "rb") as f:
                while chunk := f.read(8 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=14.5 * 1e9 / 2**30, help="size of the large file (default 14.5 GB)")
    p.add_argument("--folder", default="/tmp/quarry-fingerprint-bench")
    p.add_argument("--keep", action="store_true", help="keep the large file")
    args = p.parse_args()

    minilm = resolve_packaged(PACKAGED_MINILM)
    size = int(args.gib * 2**30)
    t = time.perf_counter()
    write_model(args.folder, size)
    print(f"wrote {size / 1e9:.1f} GB in {time.perf_counter() - t:.0f} s", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"full-hash limit {teacher_module.FULL_HASH_BYTES / 2**30:.0f} GiB, "
          f"{teacher_module.SAMPLE_BLOCKS} blocks of {teacher_module.SAMPLE_BYTES >> 10} KiB above it")
    print(f"{'model':32} {'method':26} {'cold s':>8} {'warm s':>8}")
    for label, folder in (("packaged MiniLM (87 MiB)", minilm), (f"7B-size file ({size / 1e9:.1f} GB)", args.folder)):
        for method, fn in (("quarry fingerprint", fingerprint), ("sha256 of every byte", full_sha256)):
            evict(folder)
            cold = timed(fn, folder)
            warm = timed(fn, folder)
            print(f"{label:32} {method:26} {cold:8.2f} {warm:8.2f}", flush=True)
    if not args.keep:
        shutil.rmtree(args.folder)


if __name__ == "__main__":
    main()
