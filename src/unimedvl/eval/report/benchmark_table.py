"""The paper-comparable table of ``unimedvl stats``: our benchmark runs beside the UniMedVL paper's numbers.

Rows are our checkpoints (model_id), then the published rows, labelled as such; columns are the
UniMedVL paper's (VQA-RAD, SLAKE, PathVQA, OmniMedVQA, GMAI-MMBench). A cell is the run's
pooled accuracy in percent with its 95% bootstrap interval and n. One detail table per benchmark
split follows (closed accuracy, open recall / exact match, multiple-choice accuracy, failures).

The published numbers (:data:`unimedvl.benchmarks.published.PAPER_RESULTS`) are the UniMedVL README/paper table:
they were measured with the paper's own protocol and prompts, which the paper does not fully
state, so they are a reference, not a like-for-like comparison; :data:`FOOTNOTES` says which of
our metrics stands in each column and what is unconfirmed.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unimedvl.benchmarks.published import CITATION, COLUMNS, PAPER_SPLITS
from unimedvl.benchmarks.published import PAPER_RESULTS as PUBLISHED
from unimedvl.eval.report.tables import html_table, markdown_table
from unimedvl.eval.statistics.stats_csv import StatsEntry

FOOTNOTES = (
    (
        f"Published rows: {CITATION}, README table. They were measured with the paper's own protocol and prompts; ours "
        "are not the same measurement."
    ),
    (
        "Our cells: pooled accuracy in % [95% bootstrap CI] (n scored questions) - VQA-RAD, SLAKE, PathVQA: every test "
        "question, closed ones by normalised match, open ones by normalised exact match; OmniMedVQA, GMAI-MMBench: "
        "multiple-choice accuracy with VLMEvalKit's letter/text matching and no LLM judge."
    ),
    (
        "Unconfirmed: the paper does not state its VQA metric. Pooled closed+open accuracy (HealthGPT's 'all', whose "
        "evaluation framework the paper credits) is the most likely reading, and how it counts an open answer correct "
        "(exact match, recall, or a judge) is unknown. GMAI-MMBench is most likely the VAL split; the OmniMedVQA subset "
        "(Open-access or all) is unknown."
    ),
)


def benchmark_entries(entries: Sequence[StatsEntry]) -> list[StatsEntry]:
    """The statistics.json files that hold a benchmark block."""
    return [e for e in entries if isinstance(e.stats.get("benchmark"), dict)]


def _cell(estimate: dict[str, Any] | None) -> str:
    if not estimate:
        return ""
    low, high = estimate["ci95"]
    return f"{100 * estimate['value']:.2f} [{100 * low:.1f}, {100 * high:.1f}] (n={estimate['n']})"


def _accuracy(entry: StatsEntry) -> dict[str, Any] | None:
    return (entry.stats["benchmark"].get("overall") or {}).get("accuracy")


def _rank(entry: StatsEntry, column: str) -> tuple[bool, bool]:
    """Which run fills a paper cell: a scored one first (a TEST split without answers is not), then the
    split the paper reports (matched as a word too: ``VAL`` in ``GMAI-MMBench_VAL``)."""
    from unimedvl.benchmarks.vlmevalkit import split_matches

    split = str(entry.stats["benchmark"].get("split") or "")
    return _accuracy(entry) is not None, split_matches(PAPER_SPLITS[column], split)


def paper_table(entries: Sequence[StatsEntry]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per model_id with benchmark runs, then the published rows."""
    chosen: dict[str, dict[str, StatsEntry]] = {}
    for e in benchmark_entries(entries):
        column = e.stats["benchmark"].get("paper_column")
        if column not in COLUMNS:
            continue
        cells = chosen.setdefault(e.model_id, {})
        held = cells.get(column)
        if held is None or _rank(e, column) > _rank(held, column):
            cells[column] = e
    header = ["model", *COLUMNS]
    rows = [
        [model, *(_cell(_accuracy(cells[c])) if c in cells else "" for c in COLUMNS)] for model, cells in chosen.items()
    ]
    rows += [[name, *(f"{values[c]:g}" for c in COLUMNS)] for name, values in PUBLISHED.items()]
    return header, rows


_DETAIL = (
    ("accuracy", "accuracy (pooled)"),
    ("closed_accuracy", "closed accuracy"),
    ("open_recall", "open recall"),
    ("open_exact_match", "open exact match"),
    ("multiple_choice_accuracy", "choice accuracy"),
)


def detail_tables(entries: Sequence[StatsEntry]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """benchmark-split label -> (header, rows): every metric of each model's run, with failures."""
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    for e in benchmark_entries(entries):
        block = e.stats["benchmark"]
        rows = tables.setdefault(e.split, (["model", *(t for _, t in _DETAIL), "failed", "unscored"], []))[1]
        overall = block.get("overall") or {}
        rows.append(
            [
                e.model_id,
                *(_cell(overall.get(k)) for k, _ in _DETAIL),
                str(block.get("n_failed", 0)),
                str(block.get("n_unscored", 0)),
            ]
        )
    return tables


def benchmark_report(entries: Sequence[StatsEntry]) -> str:
    """The paper table, its footnotes and the detail tables as markdown ('' when there are no benchmark runs)."""
    if not benchmark_entries(entries):
        return ""
    parts = ["## Standard benchmarks (the UniMedVL paper's columns)", markdown_table(*paper_table(entries)), ""]
    parts += [f"{i}. {note}" for i, note in enumerate(FOOTNOTES, start=1)]
    for label, table in detail_tables(entries).items():
        parts += ["", f"### {label}", markdown_table(*table)]
    return "\n".join(parts) + "\n"


def benchmark_html(entries: Sequence[StatsEntry]) -> list[tuple[str, str]]:
    """(title, HTML) sections for the HTML report's preface ([] when there are no benchmark runs)."""
    if not benchmark_entries(entries):
        return []
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in FOOTNOTES)
    body = html_table(*paper_table(entries)) + f"<ol>{notes}</ol>"
    body += "".join(
        f"<h3>{html.escape(label)}</h3>" + html_table(*table) for label, table in detail_tables(entries).items()
    )
    return [("Standard benchmarks (the UniMedVL paper's columns)", body)]


def write_benchmark_csv(entries: Sequence[StatsEntry], path: str | Path) -> int:
    """Long-form CSV (model_id, label, benchmark, split, paper_column, group, value, metric, ci, n); rows written."""
    rows = []
    for e in benchmark_entries(entries):
        block = e.stats["benchmark"]
        groups = [("overall", "", block.get("overall") or {})]
        groups += [
            (name, value, scores)
            for name, by_value in sorted((block.get("by_group") or {}).items())
            for value, scores in sorted(by_value.items())
        ]
        for group, value, scores in groups:
            for metric, est in sorted(scores.items()):
                if est:
                    rows.append(
                        [
                            e.model_id,
                            e.split,
                            block.get("name"),
                            block.get("split"),
                            block.get("paper_column"),
                            group,
                            value,
                            metric,
                            est["value"],
                            *est["ci95"],
                            est["n"],
                        ]
                    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "model_id",
                "label",
                "benchmark",
                "split",
                "paper_column",
                "group",
                "group_value",
                "metric",
                "value",
                "ci95_low",
                "ci95_high",
                "n",
            ]
        )
        writer.writerows(rows)
    return len(rows)
