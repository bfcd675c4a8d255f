"""The report of ``unimedvl stats``: the summary CSV, charts, an HTML page and its Markdown tables.

``writer`` builds it from evaluation runs; ``tables``, ``charts``, ``html`` and ``samples`` are its
parts, ``benchmark_table`` the paper-comparable table. The names of ``writer`` are importable from
here (``from unimedvl.eval.report import write_report``), on first use.
"""

from __future__ import annotations

import importlib

_WRITER_NAMES = (
    "build_markdown",
    "compare_checkpoints",
    "failure_lines",
    "read_train_log",
    "split_tables",
    "summary_text",
    "write_benchmark_tables",
    "write_report",
    "LOSS_CHART",
)
__all__ = sorted(_WRITER_NAMES)


def __getattr__(name: str):
    if name in _WRITER_NAMES:
        return getattr(importlib.import_module("unimedvl.eval.report.writer"), name)
    raise AttributeError(f"module 'unimedvl.eval.report' has no attribute {name!r}")
