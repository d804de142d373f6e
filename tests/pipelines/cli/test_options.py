import argparse
from dataclasses import dataclass

import pytest

from pipelines.cli.options import FLAGS_DEST, Command, as_flags, build, comma_list, default, int_list, parse_columns
from storage import ConfigError, InputError


@dataclass
class Inner:
    size: int = 3

    def __post_init__(self):
        if self.size < 1:
            raise ConfigError("size", f"must be at least 1, got {self.size}")


@dataclass
class Outer:
    inner: Inner
    rate: float = 0.5


def test_an_option_takes_its_default_and_number_type_from_the_config_field():
    parser = argparse.ArgumentParser()
    command = Command(parser, handler=print)
    command.option("--size", "inner.size", cls=Inner, help="(default %(default)s)")
    command.option("--rate", "rate", cls=Outer)
    args = parser.parse_args(["--rate", "0.25"])
    assert (args.size, args.rate) == (3, 0.25)
    assert parser.parse_args(["--size", "7"]).size == 7  # parsed as an int, not kept as text
    assert getattr(args, FLAGS_DEST) == {"inner.size": "--size", "rate": "--rate"}
    assert "(default 3)" in parser.format_help()


def test_a_config_error_is_said_by_the_flag_that_set_the_field():
    flags = {"inner.size": "--size"}
    with pytest.raises(ConfigError) as caught:
        build(Inner, "inner", size=0)
    assert caught.value.field == "inner.size"
    assert as_flags(caught.value, flags) == "--size must be at least 1, got 0"
    assert as_flags(ConfigError("other", "is wrong"), flags) == "other is wrong"  # no flag set it: the field
    assert default(Outer, "rate") == 0.5


def test_the_small_parsers_name_their_flag_on_bad_input():
    assert comma_list(" a, b ,,") == ("a", "b") and comma_list(None) == ()
    assert int_list("64,128", "--dims") == [64, 128]
    with pytest.raises(InputError, match="--dims: expected comma-separated integers, got 'x'"):
        int_list("64,x", "--dims")
    assert parse_columns("title=name, text=body") == {"title": "name", "text": "body"}
    with pytest.raises(InputError, match="bad --columns entry 'title'"):
        parse_columns("title")
