"""Validation of dataset, kind and version names.

Names become path components under the data root, so they are checked before any path is
built: a name can never contain a separator, a parent reference or anything that could
escape the root.
"""

from __future__ import annotations

import re

from storage.errors import InputError

# Matched with fullmatch and ASCII-only classes: ``$`` would also match before a trailing
# newline ("abc\n" would pass) and ``\d`` accepts every Unicode digit ("v٠٠٠١").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_VERSION = re.compile(r"v([0-9]{4,9})")


def validate_name(name: str, what: str = "dataset name") -> str:
    """Return ``name`` if it is a safe single path component, else raise InputError."""
    if not is_valid_name(name):
        raise InputError(
            f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def is_valid_name(name: str) -> bool:
    """Whether ``validate_name`` accepts ``name`` (for a value that may be a name or a path)."""
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and ".." not in name


def validate_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise InputError(f"invalid dataset kind {kind!r}: use lowercase letters, digits and '_'")
    return kind


def validate_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InputError(f"invalid version {version!r}: versions look like v0001")
    return version


def version_number(version: str) -> int:
    return int(_VERSION.fullmatch(validate_version(version)).group(1))


def format_version(number: int) -> str:
    return f"v{number:04d}"


def is_version(name: str) -> bool:
    return bool(_VERSION.fullmatch(name))


# The corpus and examples `quarry run` builds from the embedded Wikipedia, and so the dataset
# every command reads unless told otherwise.
DEFAULT_DATASET = "vital"
