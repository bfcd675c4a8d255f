"""``unimedvl convert --benchmark`` and ``unimedvl validate-data --benchmark``: a publisher's files in, a report out.

::

    unimedvl convert --benchmark NAME PATH --out FILE.jsonl [--split test] [--language en|zh|all]
                     [--image-dir DIR]
    unimedvl validate-data --benchmark NAME PATH [--split NAME|all] [--language en|zh|all]

``convert`` writes our JSONL (records: :mod:`unimedvl.benchmarks.convert`), images referenced in
place or, for parquet / TSV bytes, extracted to ``--image-dir`` (default ``FILE_images/`` beside
the JSONL), so the same sets can be used for fine-tuning. ``validate-data --benchmark`` reads
every question (all splits unless ``--split``) and every image header, and prints the count per
split and answer type and one ``path:row: message`` line per problem. Both exit with status 1
when there are problems (convert still writes every usable question).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unimedvl.benchmarks import NAMES
from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark, write_jsonl
from unimedvl.benchmarks.reader import LANGUAGES, ReadOptions
from unimedvl.data.problem_lines import print_problems
from unimedvl.fileio import disk_full_reported
from unimedvl.run_lock import RunLock


def add_language_option(parser: argparse.ArgumentParser) -> None:
    """``--language`` (SLAKE's question language)."""
    parser.add_argument(
        "--language",
        default="en",
        choices=LANGUAGES,
        help="SLAKE questions to read: en (default, as papers report), zh or all",
    )


def print_checksums(conv, file=None) -> None:
    """``md5 <digest>  <size> bytes  <file>`` for each file the questions were read from (VLMEvalKit checks md5s)."""
    from unimedvl.benchmarks.published import file_checksums

    for path, check in file_checksums(conv.source_files).items():
        print(f"  md5 {check['md5']}  {check['size']:,} bytes  {path}", file=file or sys.stdout)


def register(subparsers) -> None:
    """Add the ``convert`` subcommand."""
    p = subparsers.add_parser(
        "convert",
        help="a standard benchmark (VQA-RAD, SLAKE, ...) as our JSONL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", required=True, choices=NAMES, help="the benchmark's format")
    p.add_argument("path", metavar="PATH", help="the benchmark folder (or file) as its publisher ships it")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the JSONL to write")
    p.add_argument("--split", help="split to convert (default: the reader's test split; 'all' for every split)")
    p.add_argument(
        "--image-dir",
        metavar="DIR",
        help="where parquet / base64 images are extracted (default: FILE_images/ beside the JSONL)",
    )
    add_language_option(p)
    p.add_argument("--max-problems", type=int, default=50, help="problems to print (default 50; 0 = all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the JSONL; 0 when every question was usable, 1 otherwise."""
    out = Path(args.out)
    with RunLock.for_file(out, "convert"):  # one run per output file (RELIABILITY.md)
        source = open_benchmark(args.benchmark, args.path, args.split, ReadOptions(language=args.language))
        image_dir = Path(args.image_dir) if args.image_dir else out.with_name(out.stem + "_images")
        with disk_full_reported(
            "converting",
            out.parent,
            "the JSONL is written last and atomically, so the old one (if any) is intact; free space and rerun",
        ):
            conv = convert_benchmark(source, image_dir=image_dir, out_dir=out.parent)
            write_jsonl(conv.records, out)
    print(conv.summary())
    print_checksums(conv)
    print(f"wrote {len(conv.records)} record(s) to {out} (prompt template {source.reader.prompt.name!r})")
    if conv.problems:
        print(f"problems: {len(conv.problems)}", file=sys.stderr)
        print_problems(conv.problems, args.max_problems or None)
    return 1 if conv.problems else 0
