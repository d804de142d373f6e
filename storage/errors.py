"""Errors Quarry raises on purpose: each carries a one-line message meant for the user."""

from __future__ import annotations


class QuarryError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


class InputError(QuarryError):
    """Bad user input: a file, row, field or option that cannot be used as given."""


class CatalogError(QuarryError):
    """The catalog cannot satisfy a request (unknown dataset, bad version, failed commit)."""


class ReadOnlyError(QuarryError):
    """A statement given to ``quarry query`` would modify something."""
