"""`unimedvl stats`: the summary CSV, charts, an HTML report and its Markdown tables for evaluation runs.

    unimedvl stats DIR... -o summary.csv [--plot DIR] [--html FILE] [--markdown FILE]
                   [--samples-per-task N] [--train-log RUN_DIR_OR_METRICS_JSONL ...]

Every statistics.json under the DIRs becomes one CSV row (layout and model_id/split rule in
unimedvl.eval.statistics.stats_csv: the reference's columns, then intervals and baselines), and every estimate
one row of ``<stem>_metrics.csv`` beside it. The terminal shows, per split, each metric with its
95% interval, n and baseline, one column per checkpoint. --plot writes the charts
(unimedvl.eval.report.charts: bars with intervals and baselines, curves over training when a split
was evaluated at several training steps). --html writes one self-contained page
(unimedvl.eval.report.html) and, beside it, report.md-style Markdown with the same tables
(--markdown names another file). --train-log adds training runs' loss curves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unimedvl.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `stats` subcommand."""
    p = subparsers.add_parser(
        "stats",
        help="summarise statistics.json files into a CSV (and charts / HTML)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="directories searched recursively for statistics.json")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="summary CSV to write")
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="write the charts here: one PNG per metric with 95%% intervals and "
        "baselines, curve_<metric>.png over training steps (default: no charts)",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="write a self-contained HTML report here, and its tables as "
        "Markdown beside it (FILE with .md) (default: none)",
    )
    p.add_argument(
        "--markdown",
        metavar="FILE",
        help="write the report's tables as Markdown here (default: beside --html, else none)",
    )
    p.add_argument(
        "--samples-per-task",
        type=int,
        default=3,
        metavar="N",
        help="sample cards per task and run in the HTML report (default 3)",
    )
    p.add_argument(
        "--train-log",
        action="append",
        default=[],
        metavar="PATH",
        help="a training run folder or its metrics.jsonl: its loss curves go into --plot "
        "(loss_curves.png) and --html (repeat for several runs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unimedvl stats`; returns the exit status (1 when no usable statistics.json)."""
    if args.samples_per_task < 0:
        raise UserError(f"--samples-per-task must be >= 0, got {args.samples_per_task}")
    for d in args.dirs:
        if not Path(d).is_dir():
            print(f"warning: {d}: not a directory", file=sys.stderr)
    from unimedvl.eval.report.writer import read_train_log, write_report
    from unimedvl.eval.statistics.stats_csv import load_statistics

    entries, skipped = load_statistics(args.dirs)
    for path, reason in skipped:
        print(f"warning: {path}: {reason}; skipped", file=sys.stderr)
    if not entries:
        what = "no usable statistics.json" if skipped else "no statistics.json"
        print(f"error: {what} found under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    logs = {_run_label(Path(p)): read_train_log(p) for p in args.train_log}
    write_report(entries, args.output, args.plot, args.html, args.markdown, logs, args.samples_per_task)
    return 0


def _run_label(path: Path) -> str:
    """A training run's name in the legend: its folder (the file's folder for metrics.jsonl)."""
    return (path if path.is_dir() else path.parent).resolve().name
