"""Errors Quarry raises on purpose: each carries a one-line message meant for the user."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none):
    what a one-line error quotes of a library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class QuarryError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


class InputError(QuarryError):
    """Bad user input: a file, row, field or option that cannot be used as given."""


class CatalogError(QuarryError):
    """The catalog cannot satisfy a request (unknown dataset, bad version, failed commit)."""


class ReadOnlyError(QuarryError):
    """A statement given to ``quarry query`` would modify something."""


class ConfigError(InputError):
    """A config value that cannot be used, said by the config's own field name
    (``depth must be at least 1``). Whoever set the value can say it their way: the CLI
    names its flag instead (``pipelines.cli.options``), a YAML loader its file."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message

    def within(self, prefix: str) -> "ConfigError":
        """The same error, its field named from an enclosing config (``teacher.max_length``)."""
        return ConfigError(f"{prefix}.{self.field}", self.message)
