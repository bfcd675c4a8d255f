"""Every public function, class and method of the api/ and train/ packages says what it is for.

Public: a module-level function or class whose name has no leading underscore, and such a method of a
public class (nested public classes included). Dunder methods, property setters/deleters and
`typing.overload` stubs are exempt. The modules' docstrings are the project's documentation
(docs/HELPERS.md), so a missing one is a gap a reader falls into.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "unimedvl"
CHECKED = ("api", "train")


def _exempt(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    name = node.name
    if name.startswith("__") and name.endswith("__"):
        return True
    for deco in node.decorator_list:
        if isinstance(deco, ast.Attribute) and deco.attr in ("setter", "deleter"):
            return True
        if (isinstance(deco, ast.Name) and deco.id == "overload") or (
            isinstance(deco, ast.Attribute) and deco.attr == "overload"
        ):
            return True
    return False


def missing_docstrings(tree: ast.Module, prefix: str = "") -> list[str]:
    """The qualified names of the public functions, classes and methods in `tree` without a docstring."""
    missing: list[str] = []

    def visit(body: list[ast.stmt], scope: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_") and not _exempt(node) and ast.get_docstring(node) is None:
                    missing.append(f"{scope}{node.name} (line {node.lineno})")
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if ast.get_docstring(node) is None:
                    missing.append(f"{scope}{node.name} (line {node.lineno})")
                visit(node.body, f"{scope}{node.name}.")

    visit(tree.body, prefix)
    return missing


def _modules() -> list[Path]:
    return sorted(p for package in CHECKED for p in (PACKAGE / package).rglob("*.py"))


def test_the_checked_packages_exist():
    """A rename of api/ or train/ must not silently turn this check into one over nothing."""
    modules = _modules()
    for package in CHECKED:
        assert any(p.parent.name == package for p in modules), f"no modules found in src/unimedvl/{package}/"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_public_functions_have_docstrings(path: Path):
    missing = missing_docstrings(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    assert not missing, (
        f"src/unimedvl/{path.relative_to(PACKAGE)}: public definitions without a docstring (say in one line "
        f"what each is for): {', '.join(missing)}"
    )


def test_the_check_finds_what_it_should():
    """The checker itself: it flags undocumented public names and passes documented, private and dunder ones."""
    source = '''
def documented():
    """Here."""

def bare(): pass

def _private(): pass

class Public:
    def __init__(self): pass

    def method(self): pass

    @property
    def value(self):
        """The value."""

    @value.setter
    def value(self, v): pass

    def _helper(self): pass

    class Inner:
        """Inner."""

        async def run(self): pass

class _Hidden:
    def method(self): pass
'''
    assert missing_docstrings(ast.parse(source)) == [
        "bare (line 5)",
        "Public (line 9)",
        "Public.method (line 12)",
        "Public.Inner.run (line 26)",
    ]
