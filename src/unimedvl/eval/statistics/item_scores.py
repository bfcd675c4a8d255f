"""Per-item scores of a run (and of its baselines), the raw material of every interval and comparison.

A :class:`Scores` holds one metric's scores keyed by sample id: a number per item for metrics that
are means (PSNR, SSIM, accuracy, recall, ROUGE-L, METEOR, CIDEr-D, time per sample), or a row of
sufficient statistics per item for corpus BLEU (:func:`unimedvl.metrics.text.bleu_statistics`).
From it come the estimate with its 95% bootstrap interval and the paired difference with another
``Scores`` of the same metric on the items both have (the model against its baseline, or two
checkpoints on the same test set), by :mod:`unimedvl.metrics.uncertainty`.

Infinite PSNRs (a prediction identical to its ground truth) are left out of every mean, as the
reference's statistics do, and counted in ``n_infinite``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from unimedvl.eval.statistics.baselines import constant_report, question_baselines
from unimedvl.metrics import text as T
from unimedvl.metrics.uncertainty import (
    BOOTSTRAP_SEED,
    CONFIDENCE,
    DEFAULT_RESAMPLES,
    bootstrap_ci_of_sums,
    mean_estimate,
    paired_difference,
)

IMAGE_METRICS = ("psnr", "ssim", "psnr_native", "ssim_native")
BLEU_ORDER = 4


@dataclass
class Scores:
    """One metric's per-item scores (see the module docstring)."""

    metric: str
    items: dict[str, Any] = field(default_factory=dict)  # sample_id -> float, or a statistics row (corpus metrics)
    statistic: Callable[[np.ndarray], np.ndarray] | None = None  # summed rows (m, k) -> (m,); None: a mean
    infinite: set[str] = field(default_factory=set)  # items left out because their score was infinite
    sources: dict[str, str] = field(default_factory=dict)  # baselines: sample_id -> the baseline's name

    @property
    def n_infinite(self) -> int:
        return len(self.infinite)

    def subset(self, ids: set[str] | None) -> Scores:
        """The scores of the items in ``ids`` (None: all)."""
        if ids is None:
            return self
        return Scores(
            self.metric,
            {i: v for i, v in self.items.items() if i in ids},
            self.statistic,
            self.infinite & ids,
            {i: v for i, v in self.sources.items() if i in ids},
        )

    def source_name(self) -> str:
        """The baseline's name over these items (" / "-joined when they mix baselines)."""
        return " / ".join(sorted({self.sources[i] for i in self.items if i in self.sources}))

    def value(self, ids: Sequence[str] | None = None) -> float:
        """The metric over ``ids`` (default: all items)."""
        ids = list(self.items) if ids is None else ids
        if self.statistic is None:
            return float(np.mean([self.items[i] for i in ids]))
        return float(self.statistic(np.sum([self.items[i] for i in ids], axis=0)[None])[0])

    def estimate(self, n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any] | None:
        """``{value, ci95, n}`` over every item (None without items)."""
        if not self.items:
            return None
        if self.statistic is None:
            est = mean_estimate(list(self.items.values()), n_resamples)
        else:
            rows = np.array(list(self.items.values()))
            low, high = bootstrap_ci_of_sums(rows, self.statistic, CONFIDENCE, n_resamples, BOOTSTRAP_SEED)
            est = {"value": self.value(), "ci95": [low, high], "n": len(rows)}
        if self.n_infinite:
            est["n_infinite"] = self.n_infinite
        return est

    def minus(self, other: Scores, n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any] | None:
        """``{value, ci95, n}`` of self - other over the items both have, resampled in pairs."""
        ids = [i for i in self.items if i in other.items]
        if not ids:
            return None
        if self.statistic is None:
            return paired_difference([self.items[i] for i in ids], [other.items[i] for i in ids], n_resamples)
        # Corpus statistic: resample items with both systems' rows side by side.
        rows = np.array([np.concatenate([self.items[i], other.items[i]]) for i in ids])
        width = rows.shape[1] // 2
        stat_a, stat_b = self.statistic, other.statistic

        def difference(sums: np.ndarray) -> np.ndarray:
            return stat_a(sums[:, :width]) - stat_b(sums[:, width:])

        low, high = bootstrap_ci_of_sums(rows, difference, CONFIDENCE, n_resamples, BOOTSTRAP_SEED)
        return {"value": float(difference(rows.sum(axis=0)[None])[0]), "ci95": [low, high], "n": len(ids)}


def _number(value: Any) -> float | None:
    if value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def _collect(metric: str, pairs: Sequence[tuple[str, Any]]) -> Scores:
    scores = Scores(metric)
    for sid, raw in pairs:
        value = _number(raw)
        if value is None or math.isnan(value):
            continue
        if math.isinf(value):
            scores.infinite.add(sid)
            continue
        scores.items[sid] = value
    return scores


def _bleu(n: int, sums: np.ndarray) -> np.ndarray:
    return T.bleu_from_statistics(sums, n, BLEU_ORDER)


def report_scores(ids: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> dict[str, Scores]:
    """Every report metric of these reports as per-item Scores (CIDEr-D's idf from these references)."""
    if not ids:
        return {}
    rows = T.bleu_statistics(hyps, refs, BLEU_ORDER)
    out = {f"bleu_{n}": Scores(f"bleu_{n}", dict(zip(ids, rows)), partial(_bleu, n)) for n in range(1, BLEU_ORDER + 1)}
    per_item = {
        "rouge_l": T.rouge_l_scores(hyps, refs),
        "meteor_exact": T.meteor_exact_scores(hyps, refs),
        "cider_d": T.cider_d(hyps, refs)[1],
    }
    out.update({name: Scores(name, dict(zip(ids, values))) for name, values in per_item.items()})
    return out


def _reports(lines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [l for l in lines if l.get("kind") == "report" and l.get("gold") and isinstance(l.get("answer"), str)]


def model_scores(lines: Sequence[Mapping[str, Any]]) -> dict[str, Scores]:
    """metric -> Scores of the model's results (failed lines left out; only metrics with items)."""
    ok = [l for l in lines if not l.get("error")]
    out: dict[str, Scores] = {}
    for metric in IMAGE_METRICS:
        out[metric] = _collect(
            metric, [(str(l["sample_id"]), (l.get("metrics") or {}).get(metric)) for l in ok if l.get("kind") == "edit"]
        )
    out["accuracy"] = _collect(
        "accuracy",
        [(str(l["sample_id"]), l["metrics"]["correct"]) for l in ok if "correct" in (l.get("metrics") or {})],
    )
    out["open_recall"] = _collect(
        "open_recall",
        [(str(l["sample_id"]), l["metrics"]["recall"]) for l in ok if "recall" in (l.get("metrics") or {})],
    )
    reports = _reports(ok)
    out.update(
        report_scores(
            [str(l["sample_id"]) for l in reports], [l["answer"] for l in reports], [l["gold"] for l in reports]
        )
    )
    out["inference_time"] = _collect("inference_time", [(str(l["sample_id"]), l.get("inference_time")) for l in ok])
    return {k: v for k, v in out.items() if v.items or v.infinite}


def baseline_scores(
    lines: Sequence[Mapping[str, Any]], train_majority: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Scores]:
    """metric -> the baseline's Scores on the same items (``sources``: each item's baseline name), for the
    metrics that have a baseline (:mod:`unimedvl.eval.statistics.baselines`; ``train_majority``: the training
    split's majority answers, :mod:`unimedvl.eval.statistics.train_majority`)."""
    ok = [l for l in lines if not l.get("error")]
    out: dict[str, Scores] = {}
    edits = [l for l in ok if l.get("kind") == "edit" and l.get("baseline")]
    for metric in IMAGE_METRICS:
        scores = _collect(
            metric, [(str(l["sample_id"]), (l.get("metrics") or {}).get(f"baseline_{metric}")) for l in edits]
        )
        if scores.items or scores.infinite:
            scores.sources = {str(l["sample_id"]): str(l["baseline"]) for l in edits}
            out[metric] = scores
    questions = question_baselines(ok, train_majority)
    for metric, key in (("accuracy", "correct"), ("open_recall", "recall")):
        entries = {sid: b for sid, b in questions.items() if key in b}
        if entries:
            out[metric] = Scores(
                metric,
                {sid: float(b[key]) for sid, b in entries.items()},
                sources={sid: b["name"] for sid, b in entries.items()},
            )
    reports = _reports(ok)
    constant = constant_report([l["gold"] for l in reports])
    if constant is not None:
        ids = [str(l["sample_id"]) for l in reports]
        for metric, scores in report_scores(ids, [constant] * len(reports), [l["gold"] for l in reports]).items():
            scores.sources = dict.fromkeys(ids, "constant")
            out[metric] = scores
    return out


__all__ = ["IMAGE_METRICS", "Scores", "baseline_scores", "model_scores", "report_scores"]
