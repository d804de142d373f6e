import pytest

from storage import Catalog, InputError, validate_name, validate_version
from storage.names import format_version, version_number


@pytest.mark.parametrize("name", ["vital", "wiki-en", "a.b_c-1", "X" * 100])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "a\\b", "..", ".hidden", "a..b", "x" * 101,
                                  "/abs", "a b", "é", "abc\n", "abc\r", "\u0661\u0662"])
def test_invalid_names_are_refused(name):
    with pytest.raises(InputError, match="invalid dataset name"):
        validate_name(name)


def test_versions_round_trip():
    assert format_version(7) == "v0007"
    assert version_number("v0007") == 7
    for bad in ["7", "v7", "v00x1", "../v0001", "v0001\n", "v\u0660\u0660\u0660\u0661"]:
        with pytest.raises(InputError):
            validate_version(bad)


def test_a_trailing_newline_or_a_non_ascii_digit_never_names_a_dataset(tmp_path):
    """``$`` matches before a trailing newline and ``\\d`` takes any Unicode digit: both once let these through."""
    catalog = Catalog(str(tmp_path))
    with pytest.raises(InputError):
        catalog.writer("corpus", "abc\n")
    with pytest.raises(InputError):
        catalog.writer("corpus\n", "abc")
    assert list(tmp_path.iterdir()) == []


def test_catalog_never_builds_a_path_from_a_bad_name(tmp_path):
    catalog = Catalog(str(tmp_path))
    with pytest.raises(InputError):
        catalog.writer("corpus", "../../escape")
    with pytest.raises(InputError):
        catalog.manifest("corpus", "vital", "../v0001")
    with pytest.raises(InputError):
        catalog.writer("../corpus", "x")
    assert list(tmp_path.iterdir()) == []
