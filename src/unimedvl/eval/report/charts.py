"""Charts of `unimedvl stats`: metrics with their 95% intervals and baselines, curves over training, losses.

bars (``<metric>.png``)
    one bar per run and group (overall, each task, each question type), its 95% bootstrap interval
    as the error bar and its baseline (same items) as a dashed black tick over it; never past the
    metric's range (percent metrics in %). A metric with no value, or the same value in every bar,
    is skipped, and so is time per sample (a cost, in the tables).
curves (``curve_<metric>.png``)
    for a split evaluated at two training steps or more: the metric against the step, one panel
    per group, one line per split (and training run, when several share a split), the interval as
    error bars and the baseline as a dashed line.
losses (``loss_curves.png``)
    the training runs' logged losses against step.

Figures are drawn off-screen (matplotlib's Agg canvas, no pyplot state) at most 13 inches wide at
100 dpi, so they fit a 1400 px page.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unimedvl.errors import UserError
from unimedvl.eval.report.tables import (
    Group,
    by_split,
    entry_estimates,
    group_label,
    metric_order,
    run_label,
)
from unimedvl.eval.statistics.stats_csv import StatsEntry
from unimedvl.metrics.info import clip_to_range, metric_info, scaled

MAX_WIDTH_IN = 13.0
NOT_CHARTED = ("inference_time",)  # a cost, not a result: in the tables only
LOSS_KEYS = ("loss", "ce", "mse")  # what the trainer logs per step in metrics.jsonl, plotted if present


def figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn off-screen (no pyplot state, safe in threads and servers)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError("--plot/--html need matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=(min(MAX_WIDTH_IN, figsize[0]), figsize[1]))
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _shown(metric: str, value: float) -> float:
    return scaled(metric, clip_to_range(metric, value))


def _error(metric: str, est: Mapping[str, Any]) -> tuple[float, float]:
    """(below, above) the value, from the interval clipped to the metric's range; (0, 0) without one."""
    value = _shown(metric, est["value"])
    ci = est.get("ci95")
    if not ci:
        return 0.0, 0.0
    return max(0.0, value - _shown(metric, ci[0])), max(0.0, _shown(metric, ci[1]) - value)


def _axis_label(metric: str) -> str:
    info = metric_info(metric)
    return f"{info.label} ({info.unit})" if info.unit else info.label


def _limits(ax, metric: str) -> None:
    info = metric_info(metric)
    low, high = ax.get_ylim()
    if info.low is not None:
        low = max(low, scaled(metric, info.low))
    if info.high is not None:
        high = min(high, scaled(metric, info.high))
    if high > low:
        ax.set_ylim(low, high)


def bar_data(entries: Sequence[StatsEntry]) -> dict[str, dict[str, dict[Group, dict[str, Any]]]]:
    """metric -> run label -> group -> estimate (every group a run reports the metric for)."""
    table: dict[str, dict[str, dict[Group, dict[str, Any]]]] = {}
    for e in entries:
        for group, metrics in entry_estimates(e).items():
            for metric, est in metrics.items():
                if metric not in NOT_CHARTED and _finite(est):
                    table.setdefault(metric, {}).setdefault(run_label(e, with_split=True), {})[group] = est
    return dict(sorted(table.items(), key=lambda kv: metric_order(kv[0])))


def _finite(est: Mapping[str, Any]) -> bool:
    return isinstance(est.get("value"), (int, float)) and math.isfinite(est["value"])


def _informative(by_label: Mapping[str, Mapping[Group, Mapping[str, Any]]]) -> bool:
    values = {round(est["value"], 12) for groups in by_label.values() for est in groups.values()}
    return len(values) > 1


def bar_chart_png(metric: str, by_label: Mapping[str, Mapping[Group, Mapping[str, Any]]]) -> bytes:
    """The bar chart of one metric (module docstring)."""
    kinds = ["overall", "task", "question type"]
    groups = sorted({g for gs in by_label.values() for g in gs}, key=lambda g: (kinds.index(g[0]), g[1]))
    labels = list(by_label)
    width = 0.8 / max(1, len(labels))
    drawn = False
    fig = figure((max(5.0, 0.9 * len(groups) * max(1, len(labels)) ** 0.5 + 2.5), 4.0))
    ax = fig.subplots()
    for i, label in enumerate(labels):
        xs, ys, below, above = [], [], [], []
        for j, g in enumerate(groups):
            est = by_label[label].get(g)
            if est is not None:
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(_shown(metric, est["value"]))
                lo, hi = _error(metric, est)
                below.append(lo)
                above.append(hi)
        ax.bar(xs, ys, width=width, yerr=[below, above] if any(below + above) else None, capsize=2, label=label)
        for x, g in zip(xs, [g for g in groups if g in by_label[label]]):  # the baseline: a tick over its bar
            base = by_label[label][g].get("baseline")
            if base is not None:
                ax.hlines(
                    _shown(metric, base["value"]),
                    x - width / 2,
                    x + width / 2,
                    colors="black",
                    linestyles="--",
                    linewidth=1.2,
                    label=None if drawn else "baseline (same items)",
                )
                drawn = True
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([group_label(g) for g in groups], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(f"{_axis_label(metric)}, 95% bootstrap intervals")
    _limits(ax, metric)
    ax.legend(fontsize=7)
    return png_bytes(fig)


def make_charts(entries: Sequence[StatsEntry]) -> dict[str, bytes]:
    """name -> PNG: one bar chart per informative metric, then the training curves."""
    charts = {m: bar_chart_png(m, by_label) for m, by_label in bar_data(entries).items() if _informative(by_label)}
    charts.update(training_curves(entries))
    return charts


# ---------------------------------------------------------------------------------------------
# Curves over training.


def _training_run(entry: StatsEntry) -> str:
    """The training run a checkpoint belongs to: its checkpoint folder's parent (else the model_id's)."""
    path = ((entry.stats.get("provenance") or {}).get("checkpoint") or {}).get("path")
    if isinstance(path, str) and path:
        return Path(path).parent.name
    return entry.model_id.rpartition("/")[0]


def curve_series(entries: Sequence[StatsEntry]) -> dict[str, list[tuple[int, StatsEntry]]]:
    """series label -> [(step, run)]: one series per split and training run evaluated at two steps or more
    (labelled by the split, or ``run/split`` when several training runs share the split)."""
    out = {}
    for split, runs in by_split(entries).items():
        by_run: dict[str, list[tuple[int, StatsEntry]]] = {}
        for e in runs:
            if e.training_step is not None:
                by_run.setdefault(_training_run(e), []).append((e.training_step, e))
        for run, points in by_run.items():
            if len({s for s, _ in points}) >= 2:
                out[f"{run}/{split}" if len(by_run) > 1 else split] = sorted(points, key=lambda p: p[0])
    return out


def training_curves(entries: Sequence[StatsEntry]) -> dict[str, bytes]:
    """``curve_<metric>`` -> PNG for every metric of the splits with a curve (module docstring)."""
    series = curve_series(entries)
    if not series:
        return {}
    # metric -> group -> series -> [(step, estimate)]
    data: dict[str, dict[Group, dict[str, list[tuple[int, dict]]]]] = {}
    for split, points in series.items():
        for step, e in points:
            for group, metrics in entry_estimates(e).items():
                for metric, est in metrics.items():
                    if metric not in NOT_CHARTED and _finite(est):
                        data.setdefault(metric, {}).setdefault(group, {}).setdefault(split, []).append((step, est))
    charts = {}
    for metric in sorted(data, key=metric_order):
        groups = data[metric]
        values = {
            round(est["value"], 12) for by_split_ in groups.values() for pts in by_split_.values() for _, est in pts
        }
        if len(values) > 1:
            charts[f"curve_{metric}"] = _curve_png(metric, groups)
    return charts


def _curve_png(metric: str, groups: Mapping[Group, Mapping[str, list[tuple[int, dict]]]]) -> bytes:
    kinds = ["overall", "task", "question type"]
    order = sorted(groups, key=lambda g: (kinds.index(g[0]), g[1]))
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    fig = figure((3.2 * cols + 0.5, 2.8 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, group in zip(axes.flat, order):
        for k, (split, points) in enumerate(sorted(groups[group].items())):
            color = f"C{k % 10}"
            steps = [s for s, _ in points]
            ys = [_shown(metric, est["value"]) for _, est in points]
            errs = list(zip(*[_error(metric, est) for _, est in points]))
            ax.errorbar(
                steps,
                ys,
                yerr=errs if any(map(any, errs)) else None,
                marker="o",
                capsize=3,
                color=color,
                label=split,
                linewidth=1.3,
                markersize=4,
            )
            base = next((est["baseline"] for _, est in reversed(points) if est.get("baseline")), None)
            if base is not None:
                ax.axhline(
                    _shown(metric, base["value"]),
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"{split}: baseline ({base['name']})",
                )
        ax.set_title(group_label(group), fontsize=9)
        ax.set_xticks(sorted({s for pts in groups[group].values() for s, _ in pts}))
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(_axis_label(metric), fontsize=8)
        ax.grid(alpha=0.3)
        _limits(ax, metric)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(order) :]:
        ax.set_visible(False)
    fig.suptitle(f"{_axis_label(metric)} over training (95% bootstrap intervals)", fontsize=10)
    return png_bytes(fig)


# ---------------------------------------------------------------------------------------------
# Training losses.


def loss_curves_png(logs: Mapping[str, list[dict]]) -> bytes:
    """One panel per logged loss (total, text CE, latent MSE): loss against step, one line per run."""
    keys = [k for k in LOSS_KEYS if any(k in row for rows in logs.values() for row in rows)]
    fig = figure((4.0 * max(1, len(keys)), 3.2))
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
    return png_bytes(fig)


__all__ = ["bar_chart_png", "bar_data", "curve_series", "loss_curves_png", "make_charts", "training_curves"]
