"""``unimedvl score``: saved or external predictions re-scored against a benchmark, without a model.

::

    unimedvl score --predictions FILE --benchmark NAME=PATH [--split test] [--language en]
                   [--protocol unimedvl|llava-med|multimedeval|medevalkit|vlmevalkit] [--out FILE.json]

FILE is any harness's output with a question id and an answer per question: JSON Lines, a JSON
list, CSV or TSV. The id is read from ``question_id``, ``id``, ``qid``, ``index`` or ``sample_id``
(our ``results.jsonl``); the answer from ``prediction``, ``response``, ``text``, ``pred``,
``output``, ``model_answer`` or, last, ``answer`` (VLMEvalKit's files hold both ``prediction`` and
the gold ``answer``; LLaVA-Med's answer files hold ``text``; MedEvalKit's ``response``). An id is the
publisher's question id (the row position for the Hugging Face copies, whose rows have none) or
our ``<benchmark>-<split>-<id>`` sample id. The benchmark is read as ``unimedvl eval`` reads it
(image files are not opened), each prediction is scored under every protocol, and the accuracy
under each is printed with its interval; ``--protocol`` picks the one the summary and ``--out``
lead with. Questions without a prediction are counted and left out; ids the benchmark does not
have are counted and printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from unimedvl.errors import DataError, UserError

ID_KEYS = ("question_id", "id", "qid", "index", "sample_id")
ANSWER_KEYS = ("prediction", "response", "text", "pred", "output", "model_answer", "answer")


def register(subparsers) -> None:
    """Add the ``score`` subcommand."""
    from unimedvl.benchmarks import NAMES
    from unimedvl.benchmarks.protocols import DEFAULT_PROTOCOL
    from unimedvl.benchmarks.protocols import NAMES as PROTOCOLS
    from unimedvl.commands.convert import add_language_option

    p = subparsers.add_parser(
        "score",
        help="re-score saved or external predictions on a benchmark, without a model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--predictions",
        required=True,
        metavar="FILE",
        help="JSONL / JSON / CSV / TSV with an id and an answer per question",
    )
    p.add_argument(
        "--benchmark",
        required=True,
        metavar="NAME=PATH",
        help=f"the benchmark the predictions answer ({', '.join(NAMES)}) and its folder",
    )
    p.add_argument("--split", help="its split (default: the reader's test split)")
    add_language_option(p)
    p.add_argument(
        "--protocol",
        default=DEFAULT_PROTOCOL,
        choices=PROTOCOLS,
        help=f"the scoring rules the summary leads with (default {DEFAULT_PROTOCOL}; every protocol's "
        "accuracy is printed)",
    )
    p.add_argument(
        "--out",
        metavar="FILE.json",
        help="write the benchmark block (as in statistics.json) here (default: printed only)",
    )
    p.set_defaults(func=run)


def read_predictions(path: Path) -> dict[str, str]:
    """id -> answer from a predictions file; DataError naming the file (and line) when it cannot be used."""
    if not path.is_file():
        raise UserError(f"--predictions {path}: not found")
    text = path.read_text(encoding="utf-8-sig")
    rows: list[Any]
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        try:
            data = json.loads(text)
            rows = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            rows = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(
                            f"{path}:{number}: malformed JSON ({err.msg}); give JSON Lines, a JSON list, CSV or TSV"
                        ) from None
    out: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(
                f"{path}: record {number} is a {type(row).__name__}, not an object with an id and an answer"
            )
        key = next((k for k in ID_KEYS if row.get(k) not in (None, "")), None)
        answer = next((k for k in ANSWER_KEYS if isinstance(row.get(k), (str, int, float))), None)
        if key is None or answer is None:
            raise DataError(
                f"{path}: record {number} has no id ({', '.join(ID_KEYS)}) or no answer "
                f"({', '.join(ANSWER_KEYS)}); its keys: {', '.join(sorted(row)) or 'none'}"
            )
        out[str(row[key]).strip()] = str(row[answer])
    return out


def score_records(
    records: list[dict[str, Any]],
    predictions: dict[str, str],
    protocol: str,
) -> tuple[list[dict[str, Any]], int, list[str]]:
    """(result lines as eval writes them, questions without a prediction, prediction ids not in the benchmark)."""
    from unimedvl.benchmarks.scoring import LINE_FIELDS, score_fields

    lines, missing, used = [], 0, set()
    for record in records:
        if "unusable" in record:
            continue
        qid, sid = str(record.get("question_id")), str(record.get("sample_id"))
        key = qid if qid in predictions else sid if sid in predictions else None
        if key is None:
            missing += 1
            continue
        used.add(key)
        gold = record.get("answer")
        fields = {**record, "protocol": protocol}
        metrics = score_fields(fields, predictions[key], None if gold is None else str(gold))
        lines.append(
            {
                "sample_id": sid,
                "answer": predictions[key],
                "gold": gold,
                "error": None,
                "benchmark": {k: record.get(k) for k in LINE_FIELDS},
                "metrics": metrics,
            }
        )
    return lines, missing, sorted(set(predictions) - used)


def run(args: argparse.Namespace) -> int:
    """Print every protocol's accuracy; 0 when every question had a prediction, 1 otherwise."""
    from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark
    from unimedvl.benchmarks.reader import ReadOptions
    from unimedvl.benchmarks.scoring import benchmark_statistics
    from unimedvl.fileio import atomic_write_text

    name, sep, path = args.benchmark.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise UserError(f"--benchmark {args.benchmark!r}: expected NAME=PATH (e.g. vqa-rad=~/data/vqa-rad)")
    predictions = read_predictions(Path(args.predictions))
    source = open_benchmark(name.strip(), path.strip(), args.split, ReadOptions(language=args.language))
    conv = convert_benchmark(source, check_images=False)
    lines, missing, unknown = score_records(conv.records, predictions, args.protocol)
    block = benchmark_statistics(lines)
    print(
        f"score: {source.label}: {len(lines)} question(s) scored, {missing} without a prediction, "
        f"{len(unknown)} prediction id(s) not in the benchmark{': ' + ', '.join(unknown[:5]) if unknown else ''}"
    )
    if block is None or not block["overall"]:
        print("score: no question could be scored", file=sys.stderr)
        return 1
    for protocol, est in (block.get("accuracy_by_protocol") or {}).items():
        low, high = est["ci95"]
        mark = "  <- --protocol" if protocol == args.protocol else ""
        print(
            f"  {protocol:13s} accuracy {100 * est['value']:6.2f}% [95% CI {100 * low:.2f}, {100 * high:.2f}] "
            f"n={est['n']}{mark}"
        )
    if args.out:
        atomic_write_text(args.out, json.dumps({"benchmark": block}, indent=2) + "\n")
        print(f"score: wrote {args.out}")
    return 1 if missing or unknown else 0
