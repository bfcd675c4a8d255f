"""Bootstrap confidence intervals of a mean score (one system), and of the difference of two systems.

Percentile bootstrap: resample the n per-question scores with replacement ``n_resamples`` times,
take the mean of each resample, and report the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles of those means. Deterministic for a seed (numpy's PCG64). For 0/1 scores (accuracy)
the mean of a resample is a Binomial(n, p) / n draw, which is sampled directly: the same
distribution as resampling the items, at a cost independent of n.

The paired version resamples *questions*, keeping both systems' scores of a question together,
which is what comparing two checkpoints on the same test set needs (their errors are correlated).

A corpus statistic that is not a mean of per-item scores (corpus BLEU: a function of n-gram counts
summed over the corpus) is bootstrapped from per-item rows of sufficient statistics
(:func:`bootstrap_ci_of_sums`): each resample draws item counts, sums the rows with those counts and
applies the statistic to the sums.

:func:`mean_estimate` is the ``{value, ci95, n}`` form statistics.json and the reports use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95  # every interval in statistics.json and the reports
BOOTSTRAP_SEED = 0
_CHUNK_ELEMENTS = 1 << 22  # resampled indices held at once (32 MB of int64)


def _as_scores(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"bootstrap_ci: {name} is empty; a confidence interval needs at least one score")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"bootstrap_ci: {name} holds NaN or infinite scores")
    return arr


def _resampled_means(arr: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = arr.size
    if np.all((arr == 0.0) | (arr == 1.0)):
        return rng.binomial(n, arr.mean(), size=n_resamples) / n
    means = np.empty(n_resamples)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, step):
        count = min(step, n_resamples - start)
        means[start : start + count] = arr[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap interval of the mean of ``values`` (see the module docstring)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be between 0 and 1 (e.g. 0.95)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1")
    arr = _as_scores(values)
    if arr.size == 1 or np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    means = _resampled_means(arr, n_resamples, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap_ci(
    values_a: Sequence[float] | np.ndarray,
    values_b: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) interval of mean(a) - mean(b), resampling questions (a[i] and b[i] score question i)."""
    a, b = _as_scores(values_a, "values_a"), _as_scores(values_b, "values_b")
    if a.shape != b.shape:
        raise ValueError(
            f"paired_bootstrap_ci: {a.size} scores for system a but {b.size} for b; pair them per question"
        )
    # Resampling question i brings a[i] and b[i] together, so the mean difference of a resample is the
    # mean of the resampled per-question differences.
    return bootstrap_ci(a - b, confidence, n_resamples, seed)


def bootstrap_ci_of_sums(
    rows: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap interval of ``statistic(rows.sum(axis=0))``.

    ``rows``: (n items, k) sufficient statistics per item; ``statistic`` maps (m, k) summed rows to (m,)
    values, so all resamples are evaluated at once.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"bootstrap_ci_of_sums: rows must be (n items, k) with n >= 1, got shape {rows.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be between 0 and 1 (e.g. 0.95)")
    n = rows.shape[0]
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, step):
        count = min(step, n_resamples - start)
        # How often each item is drawn in each resample: a multinomial(n, 1/n) count vector.
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=count)
        values[start : start + count] = statistic(draws @ rows)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (not degenerate at 0 or n successes)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def mean_estimate(values: Sequence[float], n_resamples: int = DEFAULT_RESAMPLES) -> dict[str, Any] | None:
    """``{value, ci95, n}`` of a mean score with its 95% bootstrap interval (None for no values).

    An accuracy of exactly 0% or 100% (0/1 scores, all equal) has a bootstrap interval of zero width,
    which claims certainty no finite sample gives; its interval is Wilson's score interval instead.
    """
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size and np.all((arr == 0) | (arr == 1)) and (arr.min() == arr.max()):
        low, high = wilson_interval(float(arr.sum()), int(arr.size))
    else:
        low, high = bootstrap_ci(values, CONFIDENCE, n_resamples, BOOTSTRAP_SEED)
    return {"value": float(np.mean(values)), "ci95": [low, high], "n": len(values)}


def clustered_mean_estimate(
    values: Sequence[float], clusters: Sequence[Any], n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any] | None:
    """``{value, ci95, n, clusters}``: the mean with a bootstrap that resamples whole clusters (e.g. the
    questions of one image together: VQA-RAD and SLAKE ask several per image, and their answers are
    correlated, so the per-question interval is too narrow). None for no values."""
    if len(values) == 0:
        return None
    index: dict[Any, int] = {}
    rows = np.zeros((len(set(clusters)), 2))
    for value, cluster in zip(values, clusters):
        k = index.setdefault(cluster, len(index))
        rows[k] += (float(value), 1.0)
    if len(index) == 1 or len(set(values)) == 1:
        est = mean_estimate(values, n_resamples)  # one cluster, or every score equal (Wilson for 0% / 100%)
    else:
        low, high = bootstrap_ci_of_sums(
            rows, lambda sums: sums[:, 0] / sums[:, 1], CONFIDENCE, n_resamples, BOOTSTRAP_SEED
        )
        est = {"value": float(np.mean(values)), "ci95": [low, high], "n": len(values)}
    return {**est, "clusters": len(index)}


def paired_difference(
    values_a: Sequence[float], values_b: Sequence[float], n_resamples: int = DEFAULT_RESAMPLES
) -> dict[str, Any] | None:
    """``{value, ci95, n}`` of mean(a) - mean(b) over paired items (None for no pairs)."""
    if len(values_a) == 0:
        return None
    low, high = paired_bootstrap_ci(values_a, values_b, CONFIDENCE, n_resamples, BOOTSTRAP_SEED)
    diff = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    return {"value": float(diff.mean()), "ci95": [low, high], "n": len(diff)}


__all__ = [
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "bootstrap_ci",
    "bootstrap_ci_of_sums",
    "mean_estimate",
    "paired_bootstrap_ci",
    "paired_difference",
]
