from storage.errors import ConfigError, InputError, first_line


def test_first_line_quotes_a_librarys_message_or_names_its_type():
    assert first_line(ValueError("bad value\n  at line 3")) == "bad value"
    assert first_line(KeyError()) == "KeyError"


def test_a_config_error_names_its_field_and_can_be_named_from_an_enclosing_config():
    e = ConfigError("max_length", "must be at least 1, got 0")
    assert isinstance(e, InputError) and str(e) == "max_length must be at least 1, got 0"
    nested = e.within("teacher")
    assert (nested.field, nested.message) == ("teacher.max_length", "must be at least 1, got 0")
