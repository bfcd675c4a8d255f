"""The tables of an evaluation report, as rounded text, for the HTML page, report.md and the terminal.

Per split (the runs evaluated on the same test items):

results
    one row per group (overall, each task, each question type) and metric; the baseline's value,
    then one column per checkpoint: ``value [95% CI] n=N``, rounded to the metric's precision.
against the baseline
    the paired difference model - baseline per checkpoint, on the items both have.
checkpoints compared
    (two runs or more) the paired difference of each checkpoint from the split's first one
    (:mod:`unimedvl.eval.statistics.comparison`).

Checkpoints are ordered by training step when every run of the split has one (provenance or a
``step_N`` folder name), else in the order found. A statistics.json without an ``estimates`` block
(written before intervals existed) gives its means without interval.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from unimedvl.eval.statistics.stats_csv import StatsEntry
from unimedvl.metrics.info import (
    ALIASES,
    METRICS,
    format_difference,
    format_estimate,
    format_number,
    metric_info,
    table_label,
)

Group = tuple[str, str]  # ("overall", "") | ("task", name) | ("question type", name)
_LEGACY_SKIP = {"total_samples", "count", "num_infinite_psnr", "failed_samples"}
OVERALL_ONLY = ("inference_time",)


def group_label(group: Group) -> str:
    kind, name = group
    return "overall" if kind == "overall" else name if kind == "task" else f"question type: {name}"


def metric_order(name: str) -> tuple[int, str]:
    keys = list(METRICS)
    return (keys.index(name), name) if name in METRICS else (len(keys), name)


def _legacy(values: Mapping[str, Any], count: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for key, v in values.items():
        if key in _LEGACY_SKIP or key.endswith("_std") or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[ALIASES.get(key, key)] = {"value": float(v), "ci95": None, "n": count}
    return out


def entry_estimates(entry: StatsEntry) -> dict[Group, dict[str, dict[str, Any]]]:
    """group -> metric -> ``{value, ci95, n[, baseline, minus_baseline]}`` of one run."""
    est = entry.stats.get("estimates")
    if isinstance(est, dict):
        out: dict[Group, dict[str, dict[str, Any]]] = {("overall", ""): est.get("overall") or {}}
        out.update({("task", t): v for t, v in (est.get("by_task_type") or {}).items()})
        out.update({("question type", q): v for q, v in (est.get("by_question_type") or {}).items()})
        return {g: m for g, m in out.items() if m}
    overall = entry.stats.get("overall") or {}
    out = {("overall", ""): _legacy(overall, overall.get("total_samples"))}
    for task, values in sorted((entry.stats.get("by_task_type") or {}).items()):
        out[("task", task)] = _legacy(values, values.get("count"))
    return {g: m for g, m in out.items() if m}


def by_split(entries: Sequence[StatsEntry]) -> dict[str, list[StatsEntry]]:
    """split -> its runs, ordered by training step when all have one."""
    splits: dict[str, list[StatsEntry]] = {}
    for e in entries:
        splits.setdefault(e.split, []).append(e)
    for split, runs in splits.items():
        steps = [e.training_step for e in runs]
        if all(s is not None for s in steps):
            splits[split] = [e for _, _, e in sorted(zip(steps, range(len(runs)), runs))]
    return splits


def data_note(runs: Sequence[StatsEntry]) -> str:
    """A warning when the runs of a split were evaluated on different data files ("" when they agree)."""
    digests = {((e.stats.get("provenance") or {}).get("data") or {}).get("sha256") for e in runs} - {None}
    if len(digests) <= 1:
        return ""
    return (
        f"The runs of split {runs[0].split} were evaluated on {len(digests)} different data files (sha256): "
        "their columns are not the same items; paired differences use the sample ids they share."
    )


def _rows(runs: Sequence[StatsEntry]) -> list[tuple[Group, str, list[dict[str, Any] | None]]]:
    """(group, metric, per-run estimate) for every group and metric any run of a split has."""
    per_run = [entry_estimates(e) for e in runs]
    groups: list[Group] = []
    for est in per_run:
        groups += [g for g in est if g not in groups]
    kinds = ["overall", "task", "question type"]
    groups.sort(key=lambda g: (kinds.index(g[0]), g[1]))
    rows = []
    for g in groups:
        metrics = sorted({m for est in per_run for m in est.get(g, {})}, key=metric_order)
        # Time per sample is a cost, not a result: once, overall.
        metrics = [m for m in metrics if m not in OVERALL_ONLY or g[0] == "overall"]
        rows += [(g, m, [est.get(g, {}).get(m) for est in per_run]) for m in metrics]
    return rows


def _blank_repeats(rows: list[list[str]]) -> list[list[str]]:
    """The group column shown on a group's first row only (the table reads as blocks)."""
    out, previous = [], None
    for row in rows:
        out.append(["" if row[0] == previous else row[0], *row[1:]])
        previous = row[0]
    return out


def run_label(entry: StatsEntry, with_split: bool = False) -> str:
    step = entry.training_step
    label = entry.model_id if step is None or str(step) in entry.model_id else f"{entry.model_id} (step {step})"
    return f"{label} / {entry.split}" if with_split else label


def results_table(runs: Sequence[StatsEntry]) -> tuple[list[str], list[list[str]]]:
    """The results table of one split (module docstring)."""
    header = ["group", "metric", "baseline", *(run_label(e) for e in runs)]
    rows = []
    for group, metric, ests in _rows(runs):
        base = next((e["baseline"] for e in ests if e and e.get("baseline")), None)
        base_text = f"{base['name']} {format_estimate(metric, base, unit=False)}" if base else ""
        rows.append(
            [
                group_label(group),
                table_label(metric),
                base_text,
                *(format_estimate(metric, e, unit=False) if e else "" for e in ests),
            ]
        )
    return header, _blank_repeats(rows)


def baseline_table(runs: Sequence[StatsEntry]) -> tuple[list[str], list[list[str]]]:
    """model - baseline per checkpoint (paired); rows only for metrics that have a baseline."""
    header = ["group", "metric", "baseline", *(f"{run_label(e)} - baseline" for e in runs)]
    rows = []
    for group, metric, ests in _rows(runs):
        diffs = [e.get("minus_baseline") if e else None for e in ests]
        if any(diffs):
            name = next(e["baseline"]["name"] for e in ests if e and e.get("baseline"))
            rows.append(
                [group_label(group), table_label(metric, difference=True), name, *(_with_n(metric, d) for d in diffs)]
            )
    return header, _blank_repeats(rows)


def _with_n(metric: str, diff: Mapping[str, Any] | None) -> str:
    return f"{format_difference(metric, diff, unit=False)} n={diff['n']}" if diff else ""


def comparison_table(comparison: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The checkpoints-compared table of one split from :func:`unimedvl.eval.statistics.comparison.compare_split`."""
    others = comparison["others"]
    header = ["group", "metric", *(f"{o} - {comparison['reference']}" for o in others)]
    rows = [
        [
            group_label(tuple(row["group"])),
            table_label(row["metric"], difference=True),
            *(_with_n(row["metric"], row["differences"].get(o)) for o in others),
        ]
        for row in comparison["rows"]
        if row["metric"] not in OVERALL_ONLY or row["group"][0] == "overall"
    ]
    return header, _blank_repeats(rows)


def provenance_table(runs: Sequence[StatsEntry]) -> tuple[list[str], list[list[str]]]:
    """One row per fact (checkpoint, step, weights hash, data, settings, versions, machine), one column per run."""
    fields = [
        ("checkpoint", ("checkpoint", "path")),
        ("training step", ("checkpoint", "training_step")),
        ("weights", ("checkpoint", "weights")),
        ("weights sha256 (short)", ("checkpoint", "weights_sha256")),
        ("data", ("data", "path")),
        ("data sha256", ("data", "sha256")),
        ("records / evaluated", None),
        ("seed", ("settings", "seed")),
        ("guidance", None),
        ("image sizes", None),
        ("unimedvl", ("software", "unimedvl")),
        ("source commit", ("software", "source_commit")),
        ("torch", ("software", "torch")),
        ("machine", None),
        ("written", None),
    ]
    header = ["", *(run_label(e, with_split=True) for e in runs)]
    rows = []
    for label, path in fields:
        cells = []
        for e in runs:
            p = e.stats.get("provenance") or {}
            cells.append(_provenance_cell(label, path, p, e.stats))
        if any(cells):
            rows.append([label, *cells])
    return header, rows


def _provenance_cell(label: str, path, p: Mapping[str, Any], stats: Mapping[str, Any]) -> str:
    if path is not None:
        value = (p.get(path[0]) or {}).get(path[1])
        value = value[:16] if label == "data sha256" and isinstance(value, str) else value
        return "" if value is None else str(value)
    s, d, m = p.get("settings") or {}, p.get("data") or {}, p.get("machine") or {}
    if label == "records / evaluated" and d:
        return f"{d.get('n_records')} / {d.get('n_results')}"
    if label == "guidance" and s:
        return (
            f"cfg text {s.get('cfg_text_scale')}, img {s.get('cfg_img_scale')}, interval {s.get('cfg_interval')}, "
            f"renorm {s.get('cfg_renorm_type')} {s.get('cfg_renorm_min')}, shift {s.get('timestep_shift')}, "
            f"{s.get('num_timesteps')} steps"
        )
    if label == "image sizes" and s:
        return (
            f"VAE {s.get('vae_min_size')}-{s.get('vae_max_size')} px, ViT {s.get('vit_min_size')}-"
            f"{s.get('vit_max_size')} px, {s.get('dtype')}"
        )
    if label == "machine" and m:
        gpu = f", {m['gpu']}" if m.get("gpu") else ""
        return f"{m.get('cpu')} x{m.get('cpu_count')}{gpu}, {m.get('device')}, {m.get('world_size')} process(es)"
    if label == "written":
        return str(stats.get("timestamp") or "")
    return ""


def headline(stats: Mapping[str, Any], metrics: Sequence[str] = ("psnr", "ssim", "accuracy")) -> str:
    """One line of a run's overall numbers with intervals and baselines, for the end of ``unimedvl eval``."""
    overall = (stats.get("estimates") or {}).get("overall") or {}
    parts = []
    for metric in metrics:
        est = overall.get(metric)
        if est:
            base = est.get("baseline")
            against = f" (baseline {base['name']} {format_number(metric, base['value'])})" if base else ""
            parts.append(f"{metric_info(metric).label} {format_estimate(metric, est)}{against}")
    return "; ".join(parts) or "no scored sample"


# ---------------------------------------------------------------------------------------------
# Rendering.


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str = "") -> str:
    """An HTML table in a box that scrolls sideways when too wide; every cell is escaped."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cls = f" class='{css_class}'" if css_class else ""
    return f"<div class='table-box'><table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""

    def cell(c: Any) -> str:
        return str(c).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows])


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns (the terminal summary)."""
    cells = [list(map(str, header)), *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


__all__ = [
    "baseline_table",
    "by_split",
    "comparison_table",
    "data_note",
    "entry_estimates",
    "group_label",
    "headline",
    "html_table",
    "markdown_table",
    "metric_order",
    "provenance_table",
    "results_table",
    "run_label",
    "text_table",
]
