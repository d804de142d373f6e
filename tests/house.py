"""The house rules of Quarry's source, checked from the code itself:

- layering: ``storage`` at the bottom; ``miners`` and ``trainers`` above it and apart from
  each other; ``evaluation`` above those; ``pipelines`` on top. Nothing imports upward;
- no module over ``MAX_MODULE_LINES`` lines, no function over ``MAX_FUNCTION_LINES``;
- every module is imported by some test, or its docstring names the test file that covers
  it (``tests/...py``, a file that exists).

    python -m tests.house        # from the repository root: the report, exit 1 on a breach

``tests/test_house.py`` runs the same checks in ``make test``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("storage", "miners", "trainers", "evaluation", "pipelines")
# What each package may import of the others.
MAY_IMPORT = {"storage": set(), "miners": {"storage"}, "trainers": {"storage"},
              "evaluation": {"storage", "miners", "trainers"},
              "pipelines": {"storage", "miners", "trainers", "evaluation"}}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
_TEST_NAMED = re.compile(r"tests/[\w/]+\.py")


@dataclass(frozen=True)
class Module:
    path: Path  # relative to the repository
    tree: ast.Module
    lines: int

    @property
    def name(self) -> str:
        parts = list(self.path.with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @property
    def package(self) -> str:
        return self.path.parts[0]


def modules() -> list[Module]:
    out = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            out.append(Module(path.relative_to(REPO), ast.parse(text), text.count("\n")))
    return out


def imported_names(tree: ast.AST) -> set[str]:
    """Every absolute module name an import statement of ``tree`` names, with the
    ``from X import Y`` forms as ``X.Y`` too (Y may be a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def layering_breaches(mods: list[Module]) -> list[str]:
    out = []
    for m in mods:
        for name in sorted(imported_names(m.tree)):
            top = name.split(".")[0]
            if top in PACKAGES and top != m.package and top not in MAY_IMPORT[m.package]:
                out.append(f"{m.path}: imports {name} ({m.package} may import {sorted(MAY_IMPORT[m.package])})")
    return out


def size_breaches(mods: list[Module]) -> list[str]:
    out = [f"{m.path}: {m.lines} lines (at most {MAX_MODULE_LINES})" for m in mods if m.lines > MAX_MODULE_LINES]
    for m in mods:
        for node in ast.walk(m.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{m.path}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return out


def untested(mods: list[Module]) -> list[str]:
    """Modules no test imports and whose docstring names no existing test file."""
    tested: set[str] = set()
    for path in (REPO / "tests").rglob("*.py"):
        tested |= imported_names(ast.parse(path.read_text(encoding="utf-8")))
    out = []
    for m in mods:
        if m.name in tested or (m.path.name == "__init__.py" and any(t.startswith(m.name + ".") for t in tested)):
            continue
        named = _TEST_NAMED.findall(ast.get_docstring(m.tree) or "")
        if named and all((REPO / n).is_file() for n in named):
            continue
        why = f"names {', '.join(named)}, which does not exist" if named else "names no test file"
        out.append(f"{m.path}: no test imports it, and its docstring {why}")
    return out


def report() -> list[str]:
    mods = modules()
    return layering_breaches(mods) + size_breaches(mods) + untested(mods)


def main() -> int:
    mods = modules()
    by_package = {p: (sum(1 for m in mods if m.package == p), sum(m.lines for m in mods if m.package == p))
                  for p in PACKAGES}
    for package, (count, lines) in by_package.items():
        print(f"{package:11} {count:3d} modules {lines:6d} lines")
    breaches = report()
    print("\n".join(breaches) if breaches else "house rules: all kept")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
