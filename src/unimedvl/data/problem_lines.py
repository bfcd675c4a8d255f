"""Problems (``path:line: message``) printed one per line, the first N, then how many were not shown.

Used by ``convert``, ``validate-data --benchmark`` and ``eval --benchmark``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from unimedvl.data.records import Problem


def print_problems(problems: Sequence[Problem], max_problems: int | None, file=None) -> None:
    """One line per problem (the first ``max_problems``), then how many were not shown (default: to stderr)."""
    file = file or sys.stderr  # looked up at call time: tests and callers may replace sys.stderr
    shown = problems if max_problems is None else problems[:max_problems]
    for problem in shown:
        print(f"  {problem}", file=file)
    if len(shown) < len(problems):
        print(f"  ... and {len(problems) - len(shown)} more", file=file)
