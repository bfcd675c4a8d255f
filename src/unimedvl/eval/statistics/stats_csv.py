"""statistics.json: building it from per-sample results, finding it on disk, and the summary CSV.

The CSV layout is spec medical.md section 5:
    model_id, split, total_samples, psnr_mean, psnr_std, ssim_mean, ssim_std, avg_inference_time,
    then for i = 1.. (tasks in alphabetical order) task{i}_type, task{i}_count, task{i}_psnr_mean,
    task{i}_psnr_std, task{i}_ssim_mean, task{i}_ssim_std.
The number of task groups is the largest over the rows; rows with fewer tasks end in blank cells,
as do missing (null) values. Extra keys in statistics.json (e.g. vqa_accuracy) are kept for the
plots and the HTML report but never add columns to that layout.

When the statistics hold ``estimates`` (intervals and baselines, unimedvl.eval.statistics.estimates), extra
columns follow the reference's, which stay byte-identical: ``training_step``, then for the overall
group and for each task{i} (same order as above) ``psnr_ci95_low, psnr_ci95_high, psnr_n,
psnr_baseline``, the same for ssim, then ``accuracy, accuracy_ci95_low, accuracy_ci95_high,
accuracy_n, accuracy_baseline`` (task columns prefixed ``task{i}_``). Every estimate of every group
and metric, baseline and paired difference included, is in the long-form CSV of
:func:`write_metrics_csv`.

model_id and split of a file ROOT/<p1>/.../<pk>/statistics.json, ROOT being the directory given
on the command line:
    k = 0 (ROOT/statistics.json)       -> model_id = name of ROOT, split = name of ROOT
    k = 1 (ROOT/<split>/statistics.json) -> model_id = name of ROOT, split = p1
    k >= 2                             -> model_id = "p1/.../p(k-1)", split = pk
so `stats results/` over results/<model>/<split>/ and `stats results/<model>` over
results/<model>/<split>/ give the same rows. The split is always the file's parent directory.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from unimedvl.errors import DataError
from unimedvl.metrics.image import mean_std_finite

log = logging.getLogger(__name__)

STATS_FILE = "statistics.json"
OVERALL_COLUMNS = ("total_samples", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "avg_inference_time")
TASK_FIELDS = ("type", "count", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std")
# Extra columns per group (after the reference's): (metric, with its value column).
EXTRA_METRICS = (("psnr", False), ("ssim", False), ("accuracy", True))
_STEP_NAME = re.compile(r"(?:^|[/_-])step[_-]?0*(\d+)$")
# Per-sample keys that are not metrics to average.
_NON_METRIC_KEYS = {
    "sample_id",
    "task_type",
    "main_task_type",
    "metric_mode",
    "psnr",
    "ssim",
    "inference_time",
    "data_range",
    "height",
    "width",
}


def _task_of(result: Mapping[str, Any]) -> str:
    return str(result.get("task_type") or result.get("main_task_type") or "unknown")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _group_stats(results: Sequence[Mapping[str, Any]], extra_keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("psnr", "ssim"):
        out[f"{key}_mean"], out[f"{key}_std"] = mean_std_finite([r.get(key) for r in results])
    out["avg_inference_time"] = mean_std_finite([r.get("inference_time") for r in results])[0]
    for key in extra_keys:  # understanding metrics, e.g. vqa_correct -> vqa_correct_mean
        vals = [float(r[key]) for r in results if isinstance(r.get(key), (int, float))]
        if vals:
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std_finite(vals)
    return out


def compute_statistics(results: Sequence[Mapping[str, Any]], timestamp: str | None = None) -> dict[str, Any]:
    """statistics.json content from per-sample result dicts.

    Each result: {"sample_id", "task_type" (or "main_task_type"), "psnr", "ssim",
    "inference_time", ...}; metric values may be None (not computed) and a PSNR of +inf
    (identical images) is counted in num_infinite_psnr but kept out of the means. Other numeric
    or boolean keys (understanding metrics) are averaged as "<key>_mean" / "<key>_std". A
    "metric_mode" shared by all results is recorded; mixed modes are an error.
    """
    extra = sorted(
        {k for r in results for k, v in r.items() if k not in _NON_METRIC_KEYS and isinstance(v, (int, float))}
    )
    modes = {r["metric_mode"] for r in results if r.get("metric_mode")}
    if len(modes) > 1:
        raise DataError(f"results mix metric modes {sorted(modes)}; compute one statistics.json per mode")
    overall: dict[str, Any] = {"total_samples": len(results)}
    overall.update(_group_stats(results, extra))
    overall["num_infinite_psnr"] = sum(1 for r in results if _is_number(r.get("psnr")) and math.isinf(r["psnr"]))
    by_task: dict[str, dict[str, Any]] = {}
    for task in sorted({_task_of(r) for r in results}):
        group = [r for r in results if _task_of(r) == task]
        by_task[task] = {"count": len(group), **_group_stats(group, extra)}
    stats: dict[str, Any] = {
        "overall": overall,
        "by_task_type": by_task,
        "timestamp": timestamp or datetime.now().isoformat(timespec="seconds"),
    }
    if modes:
        stats["metric_mode"] = modes.pop()
    return stats


@dataclass
class StatsEntry:
    """One statistics.json found on disk, with the labels its CSV row gets."""

    path: Path
    model_id: str
    split: str
    stats: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.model_id}/{self.split}"

    @property
    def training_step(self) -> int | None:
        """The checkpoint's training step: statistics.json provenance, else a ``step_N`` model_id."""
        step = ((self.stats.get("provenance") or {}).get("checkpoint") or {}).get("training_step")
        if isinstance(step, int) and not isinstance(step, bool):
            return step
        match = _STEP_NAME.search(self.model_id)
        return int(match.group(1)) if match else None


def identify(root: Path, stats_file: Path) -> tuple[str, str]:
    """(model_id, split) of stats_file found under root (rule in the module docstring)."""
    root = Path(os.path.abspath(root))
    parts = Path(os.path.abspath(stats_file)).parent.relative_to(root).parts
    if not parts:
        return root.name, root.name
    if len(parts) == 1:
        return root.name, parts[0]
    return "/".join(parts[:-1]), parts[-1]


def find_statistics(dirs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(root, file) for every statistics.json under each dir, in command-line then path order.

    A file reached from two overlapping dirs is listed once, under the first.
    """
    found, seen = [], set()
    for d in dirs:
        root = Path(d)
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if STATS_FILE in filenames:
                files.append(Path(dirpath) / STATS_FILE)
        for f in sorted(files, key=lambda p: p.relative_to(root).parts):
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                found.append((root, f))
    return found


def check_statistics(obj: Any) -> str | None:
    """Why obj is not a usable statistics.json, or None when it is."""
    if not isinstance(obj, dict):
        return "top level is not a JSON object"
    if not isinstance(obj.get("overall"), dict):
        return "missing 'overall' object"
    tasks = obj.get("by_task_type", {})
    if not isinstance(tasks, dict):
        return "'by_task_type' is not an object"
    groups = [("overall", obj["overall"], OVERALL_COLUMNS)]
    for name, entry in tasks.items():
        if not isinstance(entry, dict):
            return f"by_task_type.{name} is not an object"
        groups.append((f"by_task_type.{name}", entry, TASK_FIELDS[1:]))
    for where, entry, keys in groups:
        for k in keys:
            v = entry.get(k)
            if v is not None and not _is_number(v):
                return f"{where}.{k} is {v!r}, not a number"
    return None


def load_statistics(dirs: Sequence[str | os.PathLike]) -> tuple[list[StatsEntry], list[tuple[Path, str]]]:
    """Read every statistics.json under dirs: (usable entries, [(path, why skipped)])."""
    entries, skipped = [], []
    for root, path in find_statistics(dirs):
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            reason = f"unreadable JSON ({e})"
        else:
            reason = check_statistics(obj)
        if reason:
            log.warning("%s: %s; skipped", path, reason)
            skipped.append((path, reason))
            continue
        model_id, split = identify(root, path)
        entries.append(StatsEntry(path=path, model_id=model_id, split=split, stats=obj))
    return entries, skipped


def csv_header(num_tasks: int) -> list[str]:
    """The summary CSV header for num_tasks task groups."""
    head = ["model_id", "split", *OVERALL_COLUMNS]
    for i in range(1, num_tasks + 1):
        head += [f"task{i}_{f}" for f in TASK_FIELDS]
    return head


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def _extra_cells(group: Mapping[str, Any]) -> list[str]:
    cells = []
    for metric, with_value in EXTRA_METRICS:
        est = group.get(metric) or {}
        ci = est.get("ci95") or [None, None]
        base = (est.get("baseline") or {}).get("value")
        cells += ([_cell(est.get("value"))] if with_value else []) + [
            _cell(ci[0]),
            _cell(ci[1]),
            _cell(est.get("n")),
            _cell(base),
        ]
    return cells


def _extra_header(prefix: str) -> list[str]:
    head = []
    for metric, with_value in EXTRA_METRICS:
        head += ([f"{prefix}{metric}"] if with_value else []) + [
            f"{prefix}{metric}_{f}" for f in ("ci95_low", "ci95_high", "n", "baseline")
        ]
    return head


def summary_table(entries: Sequence[StatsEntry]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the summary CSV, every row as long as the header (extras: module docstring)."""
    num_tasks = max((len(e.stats.get("by_task_type", {})) for e in entries), default=0)
    header = csv_header(num_tasks)
    extras = any(isinstance(e.stats.get("estimates"), dict) for e in entries)
    if extras:
        header = header + ["training_step", *_extra_header("")]
        header += [c for i in range(1, num_tasks + 1) for c in _extra_header(f"task{i}_")]
    rows = []
    for e in entries:
        overall = e.stats["overall"]
        row = [e.model_id, e.split, *(_cell(overall.get(k)) for k in OVERALL_COLUMNS)]
        tasks = e.stats.get("by_task_type", {})
        for task in sorted(tasks):
            row += [task, *(_cell(tasks[task].get(f)) for f in TASK_FIELDS[1:])]
        row += [""] * (len(csv_header(num_tasks)) - len(row))
        if extras:
            est = e.stats.get("estimates") or {}
            by_task = est.get("by_task_type") or {}
            row += [_cell(e.training_step), *_extra_cells(est.get("overall") or {})]
            for task in sorted(tasks):
                row += _extra_cells(by_task.get(task) or {})
            row += [""] * (len(header) - len(row))
        rows.append(row)
    return header, rows


def write_summary_csv(entries: Sequence[StatsEntry], path: str | os.PathLike) -> None:
    """Write the summary CSV of entries to path (parent directories are created)."""
    _write_csv(path, *summary_table(entries))


METRICS_CSV_HEADER = (
    "model_id",
    "split",
    "training_step",
    "group_kind",
    "group",
    "metric",
    "value",
    "ci95_low",
    "ci95_high",
    "n",
    "n_infinite",
    "baseline",
    "baseline_value",
    "baseline_ci95_low",
    "baseline_ci95_high",
    "baseline_n",
    "minus_baseline",
    "minus_baseline_ci95_low",
    "minus_baseline_ci95_high",
    "minus_baseline_n",
)


def metrics_rows(entries: Sequence[StatsEntry]) -> list[list[str]]:
    """One row per run, group and metric of the ``estimates`` blocks (raw numbers, not rounded)."""
    rows = []
    for e in entries:
        est = e.stats.get("estimates")
        if not isinstance(est, dict):
            continue
        groups = [("overall", "", est.get("overall") or {})]
        for block, kind in (("by_task_type", "task"), ("by_question_type", "question_type")):
            groups += [(kind, name, metrics) for name, metrics in sorted((est.get(block) or {}).items())]
        for kind, name, metrics in groups:
            for metric, m in metrics.items():
                base, diff = m.get("baseline") or {}, m.get("minus_baseline") or {}
                ci, bci, dci = (x.get("ci95") or [None, None] for x in (m, base, diff))
                rows.append(
                    [
                        e.model_id,
                        e.split,
                        _cell(e.training_step),
                        kind,
                        name,
                        metric,
                        _cell(m.get("value")),
                        _cell(ci[0]),
                        _cell(ci[1]),
                        _cell(m.get("n")),
                        _cell(m.get("n_infinite")),
                        _cell(base.get("name")),
                        _cell(base.get("value")),
                        _cell(bci[0]),
                        _cell(bci[1]),
                        _cell(base.get("n")),
                        _cell(diff.get("value")),
                        _cell(dci[0]),
                        _cell(dci[1]),
                        _cell(diff.get("n")),
                    ]
                )
    return rows


def write_metrics_csv(entries: Sequence[StatsEntry], path: str | os.PathLike) -> int:
    """Write the long-form CSV of every estimate (:func:`metrics_rows`); the number of rows."""
    rows = metrics_rows(entries)
    _write_csv(path, list(METRICS_CSV_HEADER), rows)
    return len(rows)


def _write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
