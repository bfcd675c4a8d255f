"""``eval --benchmark``: the standard benchmarks read where they lie, converted once, evaluated like any test set.

Each benchmark is converted once by rank 0 (:mod:`unimedvl.benchmarks.convert`) into
``DIR/<benchmark>-<split>.jsonl`` (DIR: ``benchmark_cache``, default ``OUT/_benchmarks``) with its
parquet / TSV images extracted beside it; the conversion is deterministic, so a rerun writes the
same file and the evaluation resumes. Questions the reader could not use are printed as
``file:row: message`` and counted as failed samples; a benchmark folder that cannot be read at all
is reported and skipped, the others still run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unimedvl.errors import ConfigError, UserError
from unimedvl.eval.runner.options import EvalOptions
from unimedvl.eval.runner.ranks import Ranks


def prepare_benchmarks(options: EvalOptions, ranks: Ranks) -> tuple[list[tuple[str, Path, Path]], int]:
    """(label, converted JSONL, its folder) per readable benchmark of ``options.benchmarks``, and how many
    could not be read.

    Every rank opens the folders (cheap: layout detection); rank 0 alone converts, the others wait.
    """
    from unimedvl.benchmarks.convert import (
        convert_benchmark,
        open_benchmark,
        write_jsonl,
    )
    from unimedvl.benchmarks.published import combined_digest, file_checksums
    from unimedvl.benchmarks.reader import ReadOptions
    from unimedvl.data.problem_lines import print_problems
    from unimedvl.eval.statistics.train_majority import (
        benchmark_train_majority,
        sidecar_path,
    )
    from unimedvl.fileio import atomic_write_text

    cache = Path(options.benchmark_cache) if options.benchmark_cache else Path(options.out) / "_benchmarks"
    read = ReadOptions(language=options.language, image_dir=options.data_dir)
    sources, errors, name_of = [], [], {}
    for name, path in options.benchmarks:
        try:
            sources.append(open_benchmark(name, path, options.split, read))
            name_of[sources[-1].label] = name
        except UserError as err:
            errors.append(str(err))
    labels = [s.label for s in sources]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"--benchmark: {', '.join(repeated)} given twice; evaluate each benchmark split once")
    if ranks.rank == 0:
        for message in errors:
            print(f"error: {message}; skipped", file=sys.stderr)
    if not sources:
        raise UserError(errors[0] if len(errors) == 1 else f"none of the {len(errors)} benchmarks could be read")
    test_sets = []
    for source in sources:
        jsonl = cache / f"{source.label}.jsonl"
        if ranks.rank == 0:
            conv = convert_benchmark(
                source, image_dir=cache / f"{source.label}_images", out_dir=cache, keep_failed=True
            )
            checksums = file_checksums(conv.source_files)
            digest = combined_digest(checksums)
            for record in conv.records:  # the scoring rules and the files' digest travel with each question
                record["protocol"] = options.protocol or "unimedvl"
                record["source_md5"] = digest
            write_jsonl(conv.records, jsonl)
            atomic_write_text(cache / f"{source.label}.sources.json", json.dumps(checksums, indent=1) + "\n")
            train = benchmark_train_majority(name_of[source.label], source.path, source.split, read)
            atomic_write_text(sidecar_path(jsonl), json.dumps(train, indent=1) + "\n")  # the majority baseline's
            print(f"eval: {conv.summary()}", file=sys.stderr)
            if conv.problems:
                print(
                    f"eval: {source.label}: {len(conv.problems)} problem(s) (failed questions are counted in "
                    "statistics.json):",
                    file=sys.stderr,
                )
                print_problems(conv.problems, 50)
        test_sets.append((source.label, jsonl, cache))
    ranks.barrier()
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
