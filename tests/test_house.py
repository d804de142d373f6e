"""The house rules (``tests/house.py``) hold for the code as it is, and the checks can fail."""

import ast
from pathlib import Path

from tests import house


def test_the_house_rules_hold():
    assert house.report() == []


def test_each_check_catches_a_breach():
    upward = house.Module(Path("storage/x.py"), ast.parse("from pipelines.run import run_main_job\n"), 1)
    assert house.layering_breaches([upward])
    sideways = house.Module(Path("miners/x.py"), ast.parse("import trainers.model\n"), 1)
    assert house.layering_breaches([sideways])
    long_body = "def f():\n" + "    x = 1\n" * house.MAX_FUNCTION_LINES
    assert house.size_breaches([house.Module(Path("miners/x.py"), ast.parse(long_body), 2)])
    assert house.size_breaches([house.Module(Path("miners/x.py"), ast.parse(""), house.MAX_MODULE_LINES + 1)])
    orphan = house.Module(Path("miners/orphan.py"), ast.parse('"""Covered by tests/no_such_test.py."""'), 1)
    assert house.untested([orphan]) == ["miners/orphan.py: no test imports it, and its docstring names "
                                        "tests/no_such_test.py, which does not exist"]
