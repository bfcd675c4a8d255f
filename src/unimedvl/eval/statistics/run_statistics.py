"""statistics.json from the result lines of an evaluation run (:mod:`unimedvl.eval.runner.batch` writes them).

The spec's keys (``overall`` / ``by_task_type`` means, :func:`unimedvl.eval.statistics.stats_csv.compute_statistics`)
plus the understanding blocks (VQA with per-question-type majority baselines, multiple choice,
report metrics over all reports), the published benchmark scores, the failures, and every metric's
mean with its 95% bootstrap interval (:mod:`unimedvl.eval.statistics.estimates`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unimedvl import metrics as M
from unimedvl.benchmarks.scoring import benchmark_statistics
from unimedvl.eval.statistics.baselines import MAJORITY_UPPER_BOUND, question_baselines
from unimedvl.eval.statistics.estimates import metric_estimates
from unimedvl.eval.statistics.item_scores import IMAGE_METRICS
from unimedvl.eval.statistics.stats_csv import compute_statistics

REPORT_TASK = "report_generation"


def _from_json_number(value: Any) -> Any:
    """Back from the JSON spelling of a result line: "inf" / "-inf" become floats again."""
    return float(value) if value in ("inf", "-inf") else value


_FLAT_METRICS = (*IMAGE_METRICS, "correct", "recall")


def _flat(line: Mapping[str, Any]) -> dict[str, Any]:
    """The per-sample dict compute_statistics reads (image metrics, understanding scores)."""
    out = {
        "sample_id": line["sample_id"],
        "task_type": line.get("task_type"),
        "inference_time": line.get("inference_time"),
    }
    metrics = line.get("metrics") or {}
    for key in _FLAT_METRICS:
        value = _from_json_number(metrics.get(key))
        if isinstance(value, bool):
            value = float(value)
        out[key] = value
    if line.get("kind") == "edit":
        out["metric_mode"] = "native" if line.get("metric_mode") == "native" else "reference"
    return out


def _vqa_block(lines: Sequence[Mapping[str, Any]], train: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    scored = [
        l
        for l in lines
        if l.get("kind") == "question"
        and "correct" in (l.get("metrics") or {})
        and l["metrics"].get("answer_kind") in ("closed", "open")
    ]
    if not scored:
        return None
    out: dict[str, Any] = {"count": len(scored), "accuracy": float(np.mean([l["metrics"]["correct"] for l in scored]))}
    out.update(
        M.vqa_scores(
            [l["answer"] for l in scored], [l["gold"] for l in scored], [l["metrics"]["answer_kind"] for l in scored]
        )
    )
    groups: dict[str, list] = {}
    for line in scored:
        groups.setdefault(line.get("question_type") or "all", []).append(line)
    by_type, majority_hits = {}, 0
    per_line = question_baselines(scored, train["answers"]) if train else {}
    for qtype in sorted(groups):
        group = groups[qtype]
        if train:  # the training split's answer of each line's type and kind (a kind it lacks: the test set's)
            bases = [per_line[str(l["sample_id"])] for l in group]
            answer = " / ".join(dict.fromkeys(b["answer"] for b in bases))
            hits = sum(b["correct"] for b in bases)
        else:
            answer, hits = Counter(M.normalize_answer(l["gold"]) for l in group).most_common(1)[0]
        majority_hits += hits
        recalls = [l["metrics"]["recall"] for l in group if "recall" in l["metrics"]]
        by_type[qtype] = {
            "count": len(group),
            "accuracy": float(np.mean([l["metrics"]["correct"] for l in group])),
            "open_recall": float(np.mean(recalls)) if recalls else None,
            "majority_answer": answer,
            "majority_baseline": hits / len(group),
        }
    out["majority_baseline"] = majority_hits / len(scored)  # always answering each type's commonest gold
    out["majority_source"] = f"training split: {train['source']}" if train else MAJORITY_UPPER_BOUND
    out["by_question_type"] = by_type
    return out


def build_statistics(
    lines: Sequence[Mapping[str, Any]], timestamp: str | None = None, train_majority: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """statistics.json content from result lines: the spec's keys plus understanding and failure blocks.

    ``total_samples`` / ``count`` cover the samples that produced a result; the failed ones
    (with an ``error``) are counted in ``failed_samples`` and listed under ``failures``. Image
    means cover edit samples; ``correct_mean`` is understanding accuracy (VQA and multiple
    choice), ``avg_inference_time`` spans every sample of the group. ``estimates``: every metric's mean
    with its 95% bootstrap interval, n and baseline (:mod:`unimedvl.eval.statistics.estimates`).
    ``train_majority``: ``{"source", "answers"}`` from :mod:`unimedvl.eval.statistics.train_majority`; without it
    the majority baseline is the test set's, labelled an upper bound.
    """
    ok = [l for l in lines if not l.get("error")]
    failed = [l for l in lines if l.get("error")]
    stats = compute_statistics([_flat(l) for l in ok], timestamp=timestamp)
    failed_by_task = Counter(str(l.get("task_type") or "unknown") for l in failed)
    stats["overall"]["failed_samples"] = len(failed)
    for task, entry in stats["by_task_type"].items():
        entry["failed_samples"] = failed_by_task.get(task, 0)
    stats["failures"] = {
        "count": len(failed),
        "by_task_type": dict(sorted(failed_by_task.items())),
        "samples": [{"sample_id": l["sample_id"], "error": l["error"]} for l in failed[:200]],
    }
    vqa = _vqa_block(ok, train_majority)
    if vqa:
        stats["vqa"] = vqa
    bench = benchmark_statistics(lines)
    if bench:
        stats["benchmark"] = bench
    mc = [l for l in ok if (l.get("metrics") or {}).get("answer_kind") == "multiple_choice"]
    if mc:
        stats["multiple_choice"] = {"count": len(mc), "accuracy": float(np.mean([l["metrics"]["correct"] for l in mc]))}
    reports = [l for l in ok if l.get("kind") == "report" and l.get("gold")]
    if reports:
        scores = M.report_metrics([l["answer"] for l in reports], [l["gold"] for l in reports])
        stats["report_generation"] = {"count": len(reports), **scores}
        stats["by_task_type"].get(REPORT_TASK, {}).update(scores)
    stats["estimates"] = metric_estimates(
        lines, train_majority=(train_majority or {}).get("answers")
    )  # every mean with its interval, n and baseline
    return stats
