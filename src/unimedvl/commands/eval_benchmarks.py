"""``unimedvl eval --benchmark``: the standard benchmarks read where they lie, evaluated like any test set.

::

    unimedvl eval --model CKPT --benchmark vqa-rad=PATH1 --benchmark slake=PATH2 --out OUT
                  [--split test] [--language en|zh|all] [--benchmark-cache DIR]
    unimedvl eval --model CKPT --benchmark vqa-rad --data PATH --out OUT       # one benchmark

Each benchmark is converted once by rank 0 (:mod:`unimedvl.benchmarks.convert`) into
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
import json
import sys
from pathlib import Path

from unimedvl.errors import ConfigError, UserError


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """``--benchmark``, ``--language``, ``--benchmark-cache`` of ``unimedvl eval``."""
    from unimedvl.benchmarks import NAMES

    g = parser.add_argument_group("standard benchmarks")
    g.add_argument("--benchmark", action="append", default=[], metavar="NAME=PATH|NAME",
                   help=f"read a benchmark as its publisher ships it ({', '.join(NAMES)}); repeat NAME=PATH for "
                        "several in one run, or give one NAME with --data PATH. --split picks its split "
                        "(default test)")  # fmt: skip
    g.add_argument("--language", default="en", choices=("en", "zh", "all"),
                   help="SLAKE question language (default en, as papers report)")  # fmt: skip
    from unimedvl.benchmarks.protocols import DEFAULT_PROTOCOL
    from unimedvl.benchmarks.protocols import NAMES as PROTOCOLS

    g.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOLS,
                   help=f"scoring rules of the pooled accuracy (default {DEFAULT_PROTOCOL}; statistics.json also holds "
                        "every protocol's; BENCHMARKS.md cites each harness's scoring file)")  # fmt: skip
    g.add_argument("--benchmark-cache", metavar="DIR",
                   help="where benchmarks are converted and their images extracted (default OUT/_benchmarks)")


def parse_benchmarks(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """(name, path) of every --benchmark (a bare NAME takes --data as its path)."""
    out = []
    for item in args.benchmark:
        name, sep, path = item.partition("=")
        if not sep:
            if not args.data or len(args.benchmark) > 1:
                raise ConfigError(f"--benchmark {item}: give its folder as --benchmark {item}=PATH (or, for a single "
                                  "benchmark, --data PATH)")  # fmt: skip
            path = args.data
        elif args.data:
            raise ConfigError(f"--benchmark {item} names its folder; drop --data {args.data}")
        if not name.strip() or not path.strip():
            raise ConfigError(f"--benchmark {item!r}: expected NAME=PATH")
        out.append((name.strip(), Path(path)))
    return out


def prepare_benchmarks(args: argparse.Namespace, benchmarks: list[tuple[str, Path]],
                       dist) -> tuple[list[tuple[str, Path, Path]], int]:  # fmt: skip
    """(label, converted JSONL, its folder) per readable benchmark, and how many could not be read.

    Every rank opens the folders (cheap: layout detection); rank 0 alone converts, the others wait.
    """
    from unimedvl.commands.convert import print_problems
    from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark, write_jsonl
    from unimedvl.benchmarks.published import combined_digest, file_checksums
    from unimedvl.benchmarks.reader import ReadOptions
    from unimedvl.eval.statistics.train_majority import benchmark_train_majority, sidecar_path
    from unimedvl.fileio import atomic_write_text

    cache = Path(args.benchmark_cache) if args.benchmark_cache else Path(args.out) / "_benchmarks"
    options = ReadOptions(language=args.language, image_dir=args.data_dir)
    sources, errors, name_of = [], [], {}
    for name, path in benchmarks:
        try:
            sources.append(open_benchmark(name, path, args.split, options))
            name_of[sources[-1].label] = name
        except UserError as err:
            errors.append(str(err))
    labels = [s.label for s in sources]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"--benchmark: {', '.join(repeated)} given twice; evaluate each benchmark split once")
    if dist.rank == 0:
        for message in errors:
            print(f"error: {message}; skipped", file=sys.stderr)
    if not sources:
        raise UserError(errors[0] if len(errors) == 1 else f"none of the {len(errors)} benchmarks could be read")
    test_sets = []
    for source in sources:
        jsonl = cache / f"{source.label}.jsonl"
        if dist.rank == 0:
            conv = convert_benchmark(source, image_dir=cache / f"{source.label}_images", out_dir=cache,
                                     keep_failed=True)  # fmt: skip
            checksums = file_checksums(conv.source_files)
            digest = combined_digest(checksums)
            for record in conv.records:  # the scoring rules and the files' digest travel with each question
                record["protocol"] = getattr(args, "protocol", None) or "unimedvl"
                record["source_md5"] = digest
            write_jsonl(conv.records, jsonl)
            atomic_write_text(cache / f"{source.label}.sources.json", json.dumps(checksums, indent=1) + "\n")
            train = benchmark_train_majority(name_of[source.label], source.path, source.split, options)
            atomic_write_text(sidecar_path(jsonl), json.dumps(train, indent=1) + "\n")  # the majority baseline's
            print(f"eval: {conv.summary()}", file=sys.stderr)
            if conv.problems:
                print(f"eval: {source.label}: {len(conv.problems)} problem(s) (failed questions are counted in "
                      "statistics.json):", file=sys.stderr)  # fmt: skip
                print_problems(conv.problems, 50)
        test_sets.append((source.label, jsonl, cache))
    dist.barrier()
    return test_sets, len(errors)


def print_benchmark_result(stats_path: Path, model_id: str, label: str) -> None:
    """One line: the run's pooled accuracy with its interval and n, or why there is none."""
    try:
        block = json.loads(stats_path.read_text(encoding="utf-8")).get("benchmark") or {}
    except (OSError, ValueError):
        return
    acc = (block.get("overall") or {}).get("accuracy")
    if acc:
        low, high = acc["ci95"]
        text = f"accuracy {100 * acc['value']:.2f}% [95% CI {100 * low:.2f}, {100 * high:.2f}] n={acc['n']}"
    else:
        text = "no scored question"
    print(f"eval: {model_id}: {label}: {text}, {block.get('n_failed', 0)} failed", file=sys.stderr)
