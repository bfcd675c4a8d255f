"""The package's layering (docs/ARCHITECTURE.md), read from the source with ``ast``.

- No import cycle among the modules of ``src/unimedvl`` (module-level imports: the ones that run
  when a module is imported; imports inside functions are deliberate and lazy).
- Library code (models, data, flow, checkpoint, inference and the small shared modules) never
  imports the layers built on it (train, app, eval, demo, medsynth, api), not even lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unimedvl

PACKAGE = Path(unimedvl.__file__).parent
APPLICATIONS = ("train", "app", "eval", "demo", "medsynth", "api", "cli")
LIBRARY = ("models", "data", "benchmarks", "flow", "sampling", "checkpoint", "inference", "config", "tokenizer", "guidance",
           "fileio", "distributed", "errors", "cli_options", "inference_config", "model_card", "memory_plan",
           "memory_estimate", "quantization", "placement", "weight_stream", "run_lock", "train_memory")  # fmt: skip


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


def test_no_import_cycles():
    assert cycles(import_graph(module_level_only=True)) == []


def test_library_code_never_imports_the_layers_above_it():
    bad = [f"{m} imports {d}" for m, deps in import_graph(module_level_only=False).items() if _layer(m) in LIBRARY
           for d in sorted(deps) if _layer(d) in APPLICATIONS]  # fmt: skip
    assert bad == []


def test_the_checks_can_fail():
    # A graph with a cycle and a library module importing the trainer must be caught.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _layer("unimedvl.models.unified") in LIBRARY and _layer("unimedvl.train.trainer") in APPLICATIONS


@pytest.mark.parametrize("layer", LIBRARY)
def test_every_library_layer_exists(layer):
    assert any(_layer(m) == layer for m in MODULES), f"unimedvl.{layer} is listed as library code but missing"
