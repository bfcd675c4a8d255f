"""The package's layering (docs/ARCHITECTURE.md), read from the source with ``ast``.

- Every module belongs to a layer, and imports only its own layer and the layers below it:
  module-level imports and imports inside functions alike (a lazy import is still a dependency),
  and the names the packages' lazy ``_EXPORTS`` tables load.
- No import cycle among the modules, counting function-level imports, and no cycle among the
  packages (two packages of one layer may use each other in one direction only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unimedvl

PACKAGE = Path(unimedvl.__file__).parent
# Bottom to top. "" is the package's own __init__ (the version and the lazy public API).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "",
            "_moved",
            "errors",
            "config",
            "fileio",
            "distributed",
            "tokenizer",
            "run_lock",
            "threads",
            "host_memory",
            "progress",
            "guidance",
            "defaults",
        ),
    ),
    ("building blocks", ("imaging", "models", "sampling", "metrics")),
    ("checkpoints and data", ("checkpoint", "data")),
    ("inference and benchmarks", ("inference", "benchmarks")),
    ("evaluation", ("eval",)),
    ("applications", ("train", "app", "api", "medsynth", "demo")),
    ("commands", ("commands",)),
    ("entry point", ("cli", "cli_docs")),
)
RANK = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
# Allowed upward arrows, each with its reason (goal: none but the public facade).
EXCEPTIONS = {
    # `from unimedvl import UniMedVL`: the package root re-exports the Python API, lazily.
    ("unimedvl", "unimedvl.inference.api"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _target(name: str) -> str:
    """The module of ours that ``import name`` loads (a submodule when it is one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(node: ast.AST) -> set[str]:
    out = set()
    if isinstance(node, ast.Import):
        out = {_target(a.name) for a in node.names if a.name.startswith("unimedvl")}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("unimedvl"):
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            out.add(full if full in MODULES else _target(node.module))
    return out


def import_graph(module_level_only: bool) -> dict[str, set[str]]:
    """module -> the modules of ours it imports."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if module_level_only:
            # Statements that run at import time: the body, and what sits in its if / try blocks.
            nodes = []
            for stmt in tree.body:
                nodes.extend(ast.walk(stmt) if isinstance(stmt, (ast.If, ast.Try)) else [stmt])
        else:
            nodes = list(ast.walk(tree))
        graph[name] = set().union(*(_imports(n) for n in nodes)) - {name, ""}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def _lazy_exports(path: Path) -> set[str]:
    """Modules named in a package's ``_EXPORTS = {name: "unimedvl.x.y"}`` table (imported on use)."""
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets):
            for value in ast.walk(node.value):
                if isinstance(value, ast.Constant) and str(value.value).startswith("unimedvl."):
                    out.add(_target(value.value))
    return out


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} imports {d}"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if RANK[_layer(d)] > RANK[_layer(m)] and (m, d) not in EXCEPTIONS
    ]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        out.setdefault(_layer(m), set()).update(_layer(d) for d in deps if _layer(d) != _layer(m))
    return out


FULL_GRAPH = import_graph(module_level_only=False)
for _name, _path in MODULES.items():
    FULL_GRAPH[_name] |= _lazy_exports(_path) - {_name}


def test_every_module_has_a_layer():
    assert sorted({_layer(m) for m in MODULES} - set(RANK)) == []


def test_no_import_cycles_between_modules():
    assert cycles(import_graph(module_level_only=True)) == []
    assert cycles(FULL_GRAPH) == [], "function-level imports count too"


def test_no_cycles_between_packages():
    assert cycles(package_graph(FULL_GRAPH)) == []


def test_imports_point_down_the_layers():
    assert upward_imports(FULL_GRAPH) == []


def test_the_checks_can_fail():
    # A cycle, an upward import and a lazily imported name must all be caught.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert upward_imports({"unimedvl.models.unified": {"unimedvl.train.trainer"}}) == [
        "unimedvl.models.unified imports unimedvl.train.trainer"
    ]
    assert upward_imports({"unimedvl.train.trainer": {"unimedvl.models.unified"}}) == []
    assert "unimedvl.imaging.medical_io" in _lazy_exports(PACKAGE / "data" / "__init__.py")


def test_function_level_imports_are_read():
    # imports inside functions (lazy ones) are part of the graph the layer test reads
    lazy = {d for m, deps in import_graph(module_level_only=False).items() for d in deps} - {
        d for m, deps in import_graph(module_level_only=True).items() for d in deps
    }
    assert lazy, "the package has lazy imports, and the full graph must see them"


@pytest.mark.parametrize("layer", [part for _, parts in LAYERS for part in parts])
def test_every_listed_layer_exists(layer):
    assert any(_layer(m) == layer for m in MODULES), f"unimedvl.{layer} is listed in LAYERS but missing"
