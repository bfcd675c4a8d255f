"""`unimedvl stats`: summary CSV, bar charts and a self-contained HTML report of evaluation runs.

    unimedvl stats DIR... -o summary.csv [--plot DIR] [--html FILE] [--samples-per-task N]
                   [--train-log RUN_DIR_OR_METRICS_JSONL ...]

Every statistics.json under the DIRs becomes one CSV row (layout and model_id/split rule in
unimedvl.eval.stats_csv). --plot writes one PNG bar chart per metric (groups: overall and each
task; one bar per model_id/split). --html writes one file with the tables, the charts and, per
run, a few input / ground truth / prediction triplets per task from images/<sample>_{input,GT,
pred}.png beside statistics.json, with the sample's line of results.jsonl when there is one.
--train-log adds the loss curves of training runs (their metrics.jsonl) to the charts and the report.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from unimedvl.errors import UserError
from unimedvl.eval.stats_csv import StatsEntry, load_statistics, summary_table, write_summary_csv
from unimedvl.fileio import read_json_lines

TRIPLET = ("input", "GT", "pred")
_SKIP_KEYS = {"total_samples", "count", "num_infinite_psnr"}


# ---------------------------------------------------------------------------------------------
# Charts


def metric_groups(entries: Sequence[StatsEntry]) -> dict[str, dict[str, dict[str, tuple]]]:
    """metric -> entry label -> group ("overall" or a task) -> (value, std or None).

    Metrics are the numeric keys of overall / by_task_type other than counts and *_std; the std
    of "x_mean" is "x_std".
    """
    table: dict[str, dict[str, dict[str, tuple]]] = {}
    for e in entries:
        groups = {"overall": e.stats["overall"], **dict(sorted(e.stats.get("by_task_type",
                                                                           {}).items()))}
        for group, values in groups.items():
            for key, v in values.items():
                if key in _SKIP_KEYS or key.endswith("_std") or isinstance(v, bool):
                    continue
                if not isinstance(v, (int, float)):
                    continue
                std = values.get(key[:-5] + "_std") if key.endswith("_mean") else None
                std = std if isinstance(std, (int, float)) else None
                table.setdefault(key, {}).setdefault(e.label, {})[group] = (float(v), std)
    return table


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn off-screen (no pyplot state, safe in threads and servers)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError("--plot/--html need matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _chart_png(metric: str, by_label: dict[str, dict[str, tuple]]) -> bytes:
    groups = ["overall"] if any("overall" in g for g in by_label.values()) else []
    groups += sorted({g for gs in by_label.values() for g in gs} - {"overall"})
    labels = list(by_label)
    width = 0.8 / max(1, len(labels))
    fig = _figure((max(5.0, 1.2 * len(groups) * max(1, len(labels)) ** 0.5 + 2), 4))
    ax = fig.subplots()
    for i, label in enumerate(labels):
        xs, ys, errs = [], [], []
        for j, g in enumerate(groups):
            if g in by_label[label]:
                v, s = by_label[label][g]
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(v)
                errs.append(s or 0.0)
        ax.bar(xs, ys, width=width, yerr=errs if any(errs) else None, capsize=2, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_title(metric)
    ax.legend(fontsize=7)
    return _png(fig)


LOSS_KEYS = ("loss", "ce", "mse")  # what the trainer logs per step in metrics.jsonl, plotted if present


def read_train_log(path: str | Path) -> list[dict]:
    """The per-step lines of a training run's metrics.jsonl (``path``: the file or its run folder).

    Lines that do not parse or have no ``step`` are skipped (a run killed mid-write leaves one).
    """
    path = Path(path)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no metrics.jsonl (pass a training run folder or its metrics.jsonl)")
    rows, _ = read_json_lines(file)
    return [r for r in rows if isinstance(r.get("step"), (int, float))]


def loss_curves_png(logs: dict[str, list[dict]]) -> bytes:
    """One panel per logged loss (total, text CE, latent MSE): loss against step, one line per run."""
    keys = [k for k in LOSS_KEYS if any(k in row for rows in logs.values() for row in rows)]
    fig = _figure((4.0 * max(1, len(keys)), 3.2))
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        for label, rows in logs.items():
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), label=label, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def make_charts(entries: Sequence[StatsEntry]) -> dict[str, bytes]:
    """metric -> PNG bytes of its bar chart (metric per task per checkpoint)."""
    return {m: _chart_png(m, by_label) for m, by_label in sorted(metric_groups(entries).items())}


def write_plots(entries: Sequence[StatsEntry], out_dir: str | Path,
                charts: dict[str, bytes] | None = None) -> list[Path]:
    """Write one <metric>.png per metric into out_dir (charts: from make_charts); the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, png in (make_charts(entries) if charts is None else charts).items():
        p = out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', metric)}.png"
        p.write_bytes(png)
        paths.append(p)
    return paths


# ---------------------------------------------------------------------------------------------
# HTML


def _img_tag(png: bytes, alt: str) -> str:
    return (f'<img alt="{html.escape(alt)}" title="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _thumbnail_png(path: Path, max_side: int) -> bytes | None:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    except (OSError, ValueError):
        return None
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def pick_samples(run_dir: Path,
                 per_task: int) -> tuple[Path, dict[str, list[tuple[str, dict]]], int]:
    """(images dir, task -> [(sample_id, result line)] with at most per_task samples, bad lines).

    Samples come from results.jsonl (in file order) when present, else from the *_pred.png files;
    only samples with at least one triplet image are kept.
    """
    img_dir = run_dir / "images" if (run_dir / "images").is_dir() else run_dir
    results, bad = read_json_lines(run_dir / "results.jsonl")
    if not results:
        results = [{"sample_id": p.name[: -len("_pred.png")]}
                   for p in sorted(img_dir.glob("*_pred.png"))]
    chosen: dict[str, list[tuple[str, dict]]] = {}
    for r in results:
        sid = str(r.get("sample_id", ""))
        task = str(r.get("task_type") or r.get("main_task_type") or "(no task type)")
        picked = chosen.setdefault(task, [])
        if sid and len(picked) < per_task and any(
                (img_dir / f"{sid}_{kind}.png").is_file() for kind in TRIPLET):
            picked.append((sid, r))
    return img_dir, {t: s for t, s in sorted(chosen.items()) if s}, bad


def _result_text(result: dict, max_chars: int = 1000) -> str:
    items = []
    for k, v in result.items():
        if isinstance(v, (dict, list)) or v is None:
            continue
        text = str(v)
        text = text if len(text) <= max_chars else text[:max_chars] + " ..."
        items.append(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(text)}</dd>")
    return f"<dl>{''.join(items)}</dl>" if items else ""


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain HTML table; every cell is escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


_CSS = """body{font-family:sans-serif;margin:1.5em}img{max-width:100%}table{border-collapse:collapse;font-size:12px;
margin-bottom:1em}td,th{border:1px solid #bbb;padding:2px 6px}th{background:#eee}
.triplet{display:flex;gap:8px;align-items:flex-start;margin:6px 0}
.triplet figure{margin:0}figcaption{font-size:11px;text-align:center}
dl{font-size:12px;max-width:40em}dt{font-weight:bold}dd{margin:0 0 4px 1em;white-space:pre-wrap}
.missing{width:128px;height:128px;background:#eee;display:flex;align-items:center;
justify-content:center;font-size:11px}"""


def build_html(entries: Sequence[StatsEntry], samples_per_task: int = 3,
               thumb_size: int = 256, charts: dict[str, bytes] | None = None,
               train_logs: dict[str, list[dict]] | None = None,
               preface: Sequence[tuple[str, str]] = ()) -> str:
    """The self-contained HTML report (tables, charts, loss curves and sample triplets, all inline).

    ``train_logs``: run label -> metrics.jsonl rows (:func:`read_train_log`), drawn as loss curves.
    ``preface``: (title, trusted HTML) sections placed first, e.g. the demo's baseline comparison.
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>UniMedVL evaluation"
             f"</title><style>{_CSS}</style></head><body><h1>UniMedVL evaluation</h1>"
             f"<p>Generated {datetime.now().isoformat(timespec='seconds')} from "
             f"{len(entries)} statistics.json file(s).</p>"]
    parts += [f"<h2>{html.escape(title)}</h2>{body}" for title, body in preface]
    if train_logs:
        parts.append("<h2>Training</h2>" + _img_tag(loss_curves_png(train_logs), "loss curves"))
    parts.append("<h2>Summary</h2>")
    parts.append(html_table(*summary_table(entries)))
    parts.append("<h2>All metrics</h2>")
    long_rows = [(e.model_id, e.split, group, metric, values[0],
                  "" if values[1] is None else values[1])
                 for metric, by_label in sorted(metric_groups(entries).items())
                 for e in entries for group, values in by_label.get(e.label, {}).items()]
    parts.append(html_table(["model_id", "split", "group", "metric", "value", "std"], long_rows))
    charts = make_charts(entries) if charts is None else charts
    if charts:
        parts.append("<h2>Charts</h2>")
        parts += [_img_tag(png, metric) for metric, png in charts.items()]
    parts.append("<h2>Samples</h2>")
    for e in entries:
        run_dir = e.path.parent
        parts.append(f"<h3>{html.escape(e.label)}</h3><p>{html.escape(str(run_dir))}</p>")
        img_dir, by_task, bad = pick_samples(run_dir, samples_per_task)
        if bad:
            parts.append(f"<p>{bad} unreadable line(s) in results.jsonl were skipped.</p>")
        if not by_task:
            parts.append("<p>No sample images found.</p>")
        for task, samples in by_task.items():
            parts.append(f"<h4>{html.escape(task)}</h4>")
            for sid, result in samples:
                figs = []
                for kind in TRIPLET:
                    png = _thumbnail_png(img_dir / f"{sid}_{kind}.png", thumb_size)
                    caption = html.escape(f"{sid} {kind}")
                    body = (_img_tag(png, f"{sid} {kind}") if png
                            else "<div class='missing'>missing</div>")
                    figs.append(f"<figure>{body}<figcaption>{caption}</figcaption></figure>")
                parts.append(f"<div class='triplet'>{''.join(figs)}{_result_text(result)}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `stats` subcommand."""
    p = subparsers.add_parser(
        "stats", help="summarise statistics.json files into a CSV (and charts / HTML)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="directories searched recursively for statistics.json")
    p.add_argument("-o", "--output", required=True, metavar="CSV", help="summary CSV to write")
    p.add_argument("--plot", metavar="DIR", help="write one PNG bar chart per metric here (default: no charts)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report here (default: none)")
    p.add_argument("--samples-per-task", type=int, default=3, metavar="N",
                   help="image triplets per task and run in the HTML report (default 3)")
    p.add_argument("--train-log", action="append", default=[], metavar="PATH",
                   help="a training run folder or its metrics.jsonl: its loss curves go into --plot "
                        "(loss_curves.png) and --html (repeat for several runs)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `unimedvl stats`; returns the exit status (1 when no usable statistics.json)."""
    if args.samples_per_task < 0:
        raise UserError(f"--samples-per-task must be >= 0, got {args.samples_per_task}")
    for d in args.dirs:
        if not Path(d).is_dir():
            print(f"warning: {d}: not a directory", file=sys.stderr)
    entries, skipped = load_statistics(args.dirs)
    for path, reason in skipped:
        print(f"warning: {path}: {reason}; skipped", file=sys.stderr)
    if not entries:
        what = "no usable statistics.json" if skipped else "no statistics.json"
        print(f"error: {what} found under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 1
    logs = {_run_label(Path(p)): read_train_log(p) for p in args.train_log}
    write_summary_csv(entries, args.output)
    print(f"wrote {len(entries)} row(s) to {args.output}")
    bench_sections = write_benchmark_tables(entries, Path(args.output))
    charts = make_charts(entries) if (args.plot or args.html) else None
    if args.plot:
        paths = write_plots(entries, args.plot, charts)
        if logs:
            paths.append(Path(args.plot) / "loss_curves.png")
            paths[-1].write_bytes(loss_curves_png(logs))
        print(f"wrote {len(paths)} chart(s) to {args.plot}")
    if args.html:
        out = Path(args.html)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(build_html(entries, args.samples_per_task, charts=charts, train_logs=logs,
                                  preface=bench_sections), encoding="utf-8")  # fmt: skip
        print(f"wrote {out}")
    return 0


def write_benchmark_tables(entries, output: Path) -> list[tuple[str, str]]:
    """Print the paper-comparable benchmark tables and write them beside the CSV (``<stem>_benchmarks.md``
    and ``.csv``); the HTML sections for the report ([] when no run is a standard benchmark)."""
    from unimedvl.eval.benchmark_table import benchmark_html, benchmark_report, write_benchmark_csv

    text = benchmark_report(entries)
    if not text:
        return []
    print(text, end="")
    md, table = output.with_name(output.stem + "_benchmarks.md"), output.with_name(output.stem + "_benchmarks.csv")
    md.write_text(text, encoding="utf-8")
    rows = write_benchmark_csv(entries, table)
    print(f"wrote {md} and {table} ({rows} row(s))")
    return benchmark_html(entries)


def _run_label(path: Path) -> str:
    """A training run's name in the legend: its folder (the file's folder for metrics.jsonl)."""
    return (path if path.is_dir() else path.parent).resolve().name
