"""How the command line meets the typed configs: defaults read from the config classes,
configs built with their errors said in flags, and the small parsers flags share.

Each default lives once, on its config's dataclass field; an option here reads it
(``option(..., cls=MineConfig)``) and its help shows it through ``%(default)s``. A config
says a bad value by its field (``storage.ConfigError``: ``depth must be at least 1``);
every option records which field it sets, so the CLI says the same error by the flag the
user typed (``--depth must be at least 1``). Tested by ``tests/pipelines/cli/test_options.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from storage import ConfigError, InputError

# The argparse destination under which each command keeps its field -> flag table.
FLAGS_DEST = "config_flags"


def default(cls: type, name: str) -> Any:
    """The default of a config dataclass field: argparse restates none of them."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


class Command:
    """One subcommand's parser, with the table of which config field each flag sets."""

    def __init__(self, parser: argparse.ArgumentParser, handler):
        self.parser = parser
        self.flags: dict[str, str] = {}
        parser.set_defaults(handler=handler, **{FLAGS_DEST: self.flags})

    def option(self, flag: str, field: str | tuple[str, ...] | None = None, cls: type | None = None,
               **kwargs) -> None:
        """Add ``flag``, setting config ``field`` (a dotted path from the command's config, or
        several when one flag sets more than one). With ``cls``, the default is that class's
        default of the field's last part (and a number's flag parses that kind of number)."""
        fields = (field,) if isinstance(field, str) else tuple(field or ())
        if cls is not None and "default" not in kwargs:
            kwargs["default"] = default(cls, fields[0].rsplit(".", 1)[-1])
        value = kwargs.get("default")
        if "type" not in kwargs and "action" not in kwargs and type(value) in (int, float):
            kwargs["type"] = type(value)  # a number's default: its flag takes that kind of number
        self.parser.add_argument(flag, **kwargs)
        for f in fields:
            self.flags[f] = flag


def build(cls: type, within: str = "", **values):
    """``cls(**values)``; a ``ConfigError`` names its field from the command's config
    (``within``: where ``cls`` sits in it, e.g. ``teacher``)."""
    try:
        return cls(**values)
    except ConfigError as e:
        raise (e.within(within) if within else e) from None


def as_flags(error: ConfigError, flags: dict[str, str]) -> str:
    """The error said by the flag that set the field, when a flag did."""
    flag = flags.get(error.field) or flags.get(error.field.rsplit(".", 1)[-1])
    return f"{flag} {error.message}" if flag else str(error)


def comma_list(text: str | None) -> tuple[str, ...]:
    """``"a, b"`` -> ("a", "b"); empty or None -> () (the config's own meaning: every task)."""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def int_list(text: str | None, flag: str) -> list[int]:
    """``"64,128"`` -> [64, 128]; a bad item is a one-line error naming the flag."""
    out = []
    for item in comma_list(text):
        try:
            out.append(int(item))
        except ValueError:
            raise InputError(f"{flag}: expected comma-separated integers, got {item!r}") from None
    return out


def parse_columns(text: str | None) -> dict[str, str]:
    """``"title=name,text=body"`` -> {"title": "name", "text": "body"}."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise InputError(f"bad --columns entry {item!r}: expected target=source, e.g. text=body")
        target, source = (x.strip() for x in item.split("=", 1))
        out[target] = source
    return out


# Help shared by the commands that encode (mine, eval).
ENCODE_IN_HELP = ("where texts the cache lacks are encoded: in this process (driver), on a Ray actor pool (actors), "
                  "or auto: the driver when one encoder would run on the local Ray quarry starts itself "
                  "(RAY_ADDRESS unset), else the pool (default %(default)s)")
ENCODERS_HELP = "encoder actors (default: one per GPU, else one)"
TASKS_HELP = "comma-separated task names (default: every {} task)"
