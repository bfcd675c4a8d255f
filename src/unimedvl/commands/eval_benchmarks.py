"""``unimedvl eval --benchmark``: the standard benchmarks read where they lie, evaluated like any test set.

::

    unimedvl eval --model CKPT --benchmark vqa-rad=PATH1 --benchmark slake=PATH2 --out OUT
                  [--split test] [--language en|zh|all] [--benchmark-cache DIR]
    unimedvl eval --model CKPT --benchmark vqa-rad --data PATH --out OUT       # one benchmark

Each benchmark is converted once by rank 0 (:mod:`unimedvl.eval.runner.benchmark_sets`) into
``DIR/<benchmark>-<split>.jsonl`` (DIR: ``--benchmark-cache``, default ``OUT/_benchmarks``) with
its parquet / TSV images extracted beside it; the conversion is deterministic, so a rerun writes
the same file and the evaluation resumes. The batch evaluator then runs it into
``OUT/<model_id>/<benchmark>-<split>/`` (``unimedvl stats OUT`` reads ``<benchmark>-<split>`` as
the split column), whose statistics.json gains a ``benchmark`` block
(:mod:`unimedvl.benchmarks.scoring`). Questions the reader could not use are printed as
``file:row: message`` and counted as failed samples; a benchmark folder that cannot be read at
all is reported and skipped, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unimedvl.errors import ConfigError


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """``--benchmark``, ``--language``, ``--benchmark-cache`` of ``unimedvl eval``."""
    from unimedvl.benchmarks import NAMES

    g = parser.add_argument_group("standard benchmarks")
    g.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="NAME=PATH|NAME",
        help=f"read a benchmark as its publisher ships it ({', '.join(NAMES)}); repeat NAME=PATH for "
        "several in one run, or give one NAME with --data PATH. --split picks its split "
        "(default test)",
    )
    g.add_argument(
        "--language",
        default="en",
        choices=("en", "zh", "all"),
        help="SLAKE question language (default en, as papers report)",
    )
    from unimedvl.benchmarks.protocols import DEFAULT_PROTOCOL
    from unimedvl.benchmarks.protocols import NAMES as PROTOCOLS

    g.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        choices=PROTOCOLS,
        help=f"scoring rules of the pooled accuracy (default {DEFAULT_PROTOCOL}; statistics.json also holds "
        "every protocol's; BENCHMARKS.md cites each harness's scoring file)",
    )
    g.add_argument(
        "--benchmark-cache",
        metavar="DIR",
        help="where benchmarks are converted and their images extracted (default OUT/_benchmarks)",
    )


def parse_benchmarks(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, path) of every --benchmark (a bare NAME takes --data as its path)."""
    out = []
    for item in args.benchmark:
        name, sep, path = item.partition("=")
        if not sep:
            if not args.data or len(args.benchmark) > 1:
                raise ConfigError(
                    f"--benchmark {item}: give its folder as --benchmark {item}=PATH (or, for a single "
                    "benchmark, --data PATH)"
                )
            path = args.data
        elif args.data:
            raise ConfigError(f"--benchmark {item} names its folder; drop --data {args.data}")
        if not name.strip() or not path.strip():
            raise ConfigError(f"--benchmark {item!r}: expected NAME=PATH")
        out.append((name.strip(), Path(path)))
    return out
