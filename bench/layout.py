"""The package's layout in numbers (issue 27): modules and lines per package, upward imports, cycles.

    PYTHONPATH=src python bench/layout.py

Reads the source with ``ast`` through the layer table and graph of tests/test_architecture.py (the
one definition of the layers), so the numbers here are what the architecture test checks:
module-level and function-level imports, and the names of lazy ``_EXPORTS`` tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_architecture as arch  # noqa: E402


def package_rows(src: Path) -> list[tuple[str, int, int]]:
    rows = []
    for folder in sorted({p.parent for p in src.rglob("*.py")}):
        files = sorted(folder.glob("*.py"))
        lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
        rows.append((str(folder.relative_to(src.parent)), len(files), lines))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    print("| package | modules | lines |\n| --- | ---: | ---: |")
    for name, modules, lines in package_rows(arch.PACKAGE):
        print(f"| {name} | {modules} | {lines} |")
    graph = arch.FULL_GRAPH
    unplaced = sorted({arch._layer(m) for m in graph} - set(arch.RANK))
    up = arch.upward_imports(graph) if not unplaced else []
    print(f"\nmodules: {len(graph)}")
    print(f"upward imports: {len(up)}" + "".join(f"\n  {line}" for line in up))
    print(f"module cycles (function-level imports included): {arch.cycles(graph)}")
    print(f"package cycles: {arch.cycles(arch.package_graph(graph))}")
    if unplaced:
        print(f"not in any layer: {unplaced}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
