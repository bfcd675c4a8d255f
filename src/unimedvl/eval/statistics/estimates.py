"""The ``estimates`` block of statistics.json: every metric's mean with its 95% interval, n and baseline.

::

    "estimates": {
      "confidence": 0.95, "method": "...",
      "overall":          {"psnr": EST, "ssim": EST, "accuracy": EST, "bleu_4": EST, ...},
      "by_task_type":     {"denoising": {"psnr": EST, ...}, ...},
      "by_question_type": {"modality": {"accuracy": EST}, ...}
    }
    EST = {"value": 25.1, "ci95": [24.3, 25.9], "n": 40, ["n_infinite": 1,]
           "baseline": {"name": "identity", "value": 22.9, "ci95": [...], "n": 40},
           "minus_baseline": {"value": 2.2, "ci95": [...], "n": 40}}

Per-item scores come from :mod:`unimedvl.eval.statistics.item_scores` (model and baselines over the whole run,
so a question type's majority answer is the same in every group), the intervals from
:mod:`unimedvl.metrics.uncertainty`; ``minus_baseline`` is the paired difference on the items both have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unimedvl.eval.statistics.item_scores import Scores, baseline_scores, model_scores
from unimedvl.metrics.uncertainty import BOOTSTRAP_SEED, CONFIDENCE, DEFAULT_RESAMPLES

METHOD = (
    f"percentile bootstrap over items, {DEFAULT_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; corpus BLEU "
    "resampled from per-report n-gram counts; differences resampled in pairs (same items)"
)


def group_estimates(
    model: Mapping[str, Scores],
    baselines: Mapping[str, Scores],
    ids: set[str] | None,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> dict[str, dict[str, Any]]:
    """metric -> EST over the items in ``ids`` (None: all), with the baseline where there is one."""
    out: dict[str, dict[str, Any]] = {}
    for metric, all_scores in model.items():
        scores = all_scores.subset(ids)
        est = scores.estimate(n_resamples)
        if est is None:
            continue
        if metric in baselines:
            base = baselines[metric].subset(ids)
            base_est = base.estimate(n_resamples)
            if base_est is not None:
                est["baseline"] = {"name": base.source_name(), **base_est}
                est["minus_baseline"] = scores.minus(base, n_resamples)
        out[metric] = est
    return out


def group_ids(lines: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """{"by_task_type": task -> sample ids, "by_question_type": question type -> ids} of the successful lines."""
    by_task: dict[str, set[str]] = {}
    by_question: dict[str, set[str]] = {}
    for line in lines:
        if line.get("error"):
            continue
        sid = str(line["sample_id"])
        by_task.setdefault(str(line.get("task_type") or "unknown"), set()).add(sid)
        if line.get("kind") == "question" and line.get("question_type"):
            by_question.setdefault(str(line["question_type"]), set()).add(sid)
    return {"by_task_type": dict(sorted(by_task.items())), "by_question_type": dict(sorted(by_question.items()))}


def metric_estimates(
    lines: Sequence[Mapping[str, Any]],
    n_resamples: int = DEFAULT_RESAMPLES,
    train_majority: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The ``estimates`` block (module docstring) of a run's result lines (``train_majority``: the
    training split's majority answers, else the test set's, labelled an upper bound)."""
    ok = [l for l in lines if not l.get("error")]
    model, baselines = model_scores(ok), baseline_scores(ok, train_majority)
    out: dict[str, Any] = {
        "confidence": CONFIDENCE,
        "method": METHOD,
        "overall": group_estimates(model, baselines, None, n_resamples),
    }
    for block, groups in group_ids(ok).items():
        out[block] = {name: group_estimates(model, baselines, ids, n_resamples) for name, ids in groups.items()}
    return out


__all__ = ["METHOD", "group_estimates", "group_ids", "metric_estimates"]
