"""What ``unimedvl stats`` (:mod:`unimedvl.commands.stats`) writes: the summary CSV, charts, an HTML
report and its Markdown tables for evaluation runs (:func:`write_report`).

Every statistics.json becomes one CSV row (layout and model_id/split rule in
unimedvl.eval.statistics.stats_csv: the reference's columns, then intervals and baselines), and every estimate
one row of ``<stem>_metrics.csv`` beside it. The terminal shows, per split, each metric with its
95% interval, n and baseline, one column per checkpoint. The charts
(unimedvl.eval.report.charts: bars with intervals and baselines, curves over training when a split
was evaluated at several training steps), one self-contained page (unimedvl.eval.report.html)
and, beside it, report.md-style Markdown with the same tables; training runs' loss curves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unimedvl.errors import UserError
from unimedvl.eval.report.charts import loss_curves_png, make_charts
from unimedvl.eval.report.html import build_page
from unimedvl.eval.report.tables import (
    baseline_table,
    by_split,
    comparison_table,
    data_note,
    html_table,
    markdown_table,
    provenance_table,
    results_table,
    run_label,
    text_table,
)
from unimedvl.eval.statistics.comparison import compare_split
from unimedvl.eval.statistics.stats_csv import StatsEntry, write_metrics_csv, write_summary_csv
from unimedvl.fileio import atomic_write_text, read_json_lines

LOSS_CHART = "loss_curves.png"


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


def compare_checkpoints(entries: Sequence[StatsEntry]) -> dict[str, Any]:
    """split -> paired comparison of its checkpoints (unimedvl.eval.statistics.comparison), for splits with two runs or more."""
    out = {}
    for split, runs in by_split(entries).items():
        if len(runs) >= 2:
            out[split] = compare_split(runs, [run_label(e) for e in runs])
    return out


def split_tables(entries: Sequence[StatsEntry], comparisons: Mapping[str, Any]) -> list[tuple[str, tuple]]:
    """(title, (header, rows)) of every table of the report, in page order (provenance last)."""
    tables = []
    for split, runs in by_split(entries).items():
        note = data_note(runs)
        tables.append((f"{split}: results" + (f" ({note})" if note else ""), results_table(runs)))
        header, rows = baseline_table(runs)
        if rows:
            tables.append((f"{split}: against the baseline (paired, model - baseline)", (header, rows)))
        comparison = comparisons.get(split)
        if comparison and comparison["rows"]:
            tables.append(
                (f"{split}: checkpoints compared with {comparison['reference']} (paired)", comparison_table(comparison))
            )
    tables.append(("provenance", provenance_table(entries)))
    return tables


def build_markdown(entries: Sequence[StatsEntry], comparisons: Mapping[str, Any], extra: str = "") -> str:
    """report.md: the report's tables only, for a paper or a pull request (``extra``: more Markdown appended)."""
    parts = [
        "# UniMedVL evaluation",
        "",
        "Values: mean [95% bootstrap interval] n=items; differences are paired over the same items.",
        "",
    ]
    for title, table in split_tables(entries, comparisons):
        parts += [f"## {title}", "", markdown_table(*table), ""]
    return "\n".join(parts) + (("\n" + extra) if extra else "")


def summary_text(entries: Sequence[StatsEntry], comparisons: Mapping[str, Any]) -> str:
    """The terminal summary: per split, every metric with interval, n and baseline (one column per
    checkpoint), then the paired comparison of the checkpoints."""
    parts = []
    for title, table in split_tables(entries, comparisons):
        if ": results" in title or ": checkpoints compared" in title:
            parts += ["", title, text_table(*table)]
    return "\n".join(parts + ["", *failure_lines(entries)])


def failure_lines(entries: Sequence[StatsEntry]) -> list[str]:
    """One line per run with failed samples (how many, of which tasks, where the errors are), or one saying none."""
    lines = []
    for entry in entries:
        failures = entry.stats.get("failures") or {}
        count = int(failures.get("count") or 0)
        if count:
            total = count + int((entry.stats.get("overall") or {}).get("total_samples") or 0)
            tasks = ", ".join(f"{task} {n}" for task, n in (failures.get("by_task_type") or {}).items())
            lines.append(
                f"failed samples: {entry.label}: {count} of {total} ({tasks}); not in the metrics above; "
                f'errors under "failures" in {entry.path}'
            )
    return lines or ["failed samples: none"]


def write_report(
    entries: Sequence[StatsEntry],
    csv_path: str | Path,
    plot_dir: str | Path | None = None,
    html_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    train_logs: Mapping[str, list[dict]] | None = None,
    samples_per_task: int = 3,
    preface: Sequence[tuple[str, str]] = (),
    out: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Everything `unimedvl stats` writes (module docstring); returns name -> path of what was written.

    ``preface``: (title, trusted HTML) sections placed first in the page (e.g. the demo's goals).
    """
    written: dict[str, Path] = {}
    csv_path = Path(csv_path)
    write_summary_csv(entries, csv_path)
    written["csv"] = csv_path
    metrics_csv = csv_path.with_name(csv_path.stem + "_metrics.csv")
    rows = write_metrics_csv(entries, metrics_csv)
    written["metrics_csv"] = metrics_csv
    out(f"wrote {len(entries)} row(s) to {csv_path} and {rows} estimate(s) to {metrics_csv}")
    bench_md, bench_html = write_benchmark_tables(entries, csv_path, out)
    comparisons = compare_checkpoints(entries)
    out(summary_text(entries, comparisons))
    logs = dict(train_logs or {})
    charts = make_charts(entries) if (plot_dir or html_path) else {}
    loss_png = loss_curves_png(logs) if logs and (plot_dir or html_path) else None
    if plot_dir:
        folder = Path(plot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for name, png in {**charts, **({LOSS_CHART[:-4]: loss_png} if loss_png else {})}.items():
            (folder / f"{_file_name(name)}.png").write_bytes(png)
        written["plots"] = folder
        out(f"wrote {len(charts) + bool(loss_png)} chart(s) to {folder}")
    if html_path:
        page = Path(html_path)
        page.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            page,
            build_page(
                entries, charts, comparisons, samples_per_task, loss_png=loss_png, preface=[*preface, *bench_html]
            ),
        )
        written["html"] = page
        markdown_path = markdown_path or page.with_suffix(".md")
    if markdown_path:
        md = Path(markdown_path)
        md.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(md, build_markdown(entries, comparisons, bench_md))
        written["markdown"] = md
    pages = [str(written[k]) for k in ("html", "markdown") if k in written]
    if pages:
        out(f"wrote {' and '.join(pages)}")
    return written


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def write_benchmark_tables(
    entries, output: Path, out: Callable[[str], None] = print
) -> tuple[str, list[tuple[str, str]]]:
    """Print the paper-comparable benchmark tables and write them beside the CSV (``<stem>_benchmarks.md``
    and ``.csv``); (their Markdown, the HTML sections for the report) ('' and [] without benchmark runs)."""
    from unimedvl.eval.report.benchmark_table import benchmark_html, benchmark_report, write_benchmark_csv

    text = benchmark_report(entries)
    if not text:
        return "", []
    out(text.rstrip("\n"))
    md, table = output.with_name(output.stem + "_benchmarks.md"), output.with_name(output.stem + "_benchmarks.csv")
    md.write_text(text, encoding="utf-8")
    rows = write_benchmark_csv(entries, table)
    out(f"wrote {md} and {table} ({rows} row(s))")
    return text, benchmark_html(entries)


__all__ = ["build_markdown", "compare_checkpoints", "html_table", "read_train_log", "summary_text", "write_report"]
