"""How each evaluation metric is shown: its label, unit, precision and the range its values can take.

The reports (HTML, Markdown, terminal) and the charts round every number to its metric's precision
(PSNR to 0.01 dB, SSIM to 0.001, accuracy to 0.1 %) and never draw a bar or an interval outside
the metric's range (an accuracy above 100 %). A metric not listed here is shown with 4 significant
digits and no range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricInfo:
    """Display facts of one metric."""

    label: str  # name in tables and chart titles
    unit: str = ""  # printed after the number ("dB", "s", "%")
    digits: int | None = 3  # decimals after rounding (None: 4 significant digits)
    percent: bool = False  # stored as a fraction 0..1, shown in percent
    low: float | None = None  # smallest possible value (None: unbounded)
    high: float | None = None  # largest possible value (None: unbounded)
    higher_is_better: bool = True


_FRACTION = {"low": 0.0, "high": 1.0}
METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("PSNR", "dB", 2, low=0.0),
    "ssim": MetricInfo("SSIM", "", 3, low=-1.0, high=1.0),
    "psnr_native": MetricInfo("PSNR (native)", "dB", 2, low=0.0),
    "ssim_native": MetricInfo("SSIM (native)", "", 3, low=-1.0, high=1.0),
    "accuracy": MetricInfo("accuracy", "%", 1, percent=True, **_FRACTION),
    "open_recall": MetricInfo("open recall", "%", 1, percent=True, **_FRACTION),
    **{f"bleu_{n}": MetricInfo(f"BLEU-{n}", "", 3, **_FRACTION) for n in range(1, 5)},
    "rouge_l": MetricInfo("ROUGE-L", "", 3, **_FRACTION),
    "meteor_exact": MetricInfo("METEOR (exact)", "", 3, **_FRACTION),
    "cider_d": MetricInfo("CIDEr-D", "", 3, low=0.0, high=10.0),
    "inference_time": MetricInfo("time per sample", "s", 2, low=0.0, higher_is_better=False),
}
# statistics.json keys of the reference schema and earlier releases -> the metric they hold.
ALIASES = {
    "psnr_mean": "psnr",
    "ssim_mean": "ssim",
    "psnr_native_mean": "psnr_native",
    "ssim_native_mean": "ssim_native",
    "correct_mean": "accuracy",
    "recall_mean": "open_recall",
    "avg_inference_time": "inference_time",
    "vqa_accuracy": "accuracy",
}


def metric_info(name: str) -> MetricInfo:
    """The display facts of ``name`` (an alias such as psnr_mean gives psnr's)."""
    return METRICS.get(ALIASES.get(name, name)) or MetricInfo(name, digits=None)


def clip_to_range(name: str, value: float) -> float:
    """``value`` moved into the metric's range (interval ends of a bootstrap never leave it; std bars could)."""
    info = metric_info(name)
    if info.low is not None:
        value = max(info.low, value)
    if info.high is not None:
        value = min(info.high, value)
    return value


def scaled(name: str, value: float) -> float:
    """The number as shown (percent metrics x 100)."""
    return 100.0 * value if metric_info(name).percent else value


def format_number(name: str, value: Any, unit: bool = True) -> str:
    """``value`` rounded to the metric's precision, with its unit ("25.10 dB", "54.2 %"); "" for none."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    info = metric_info(name)
    shown = scaled(name, float(value))
    text = f"{shown:.{info.digits}f}" if info.digits is not None else f"{shown:.4g}"
    if text.startswith("-") and not text.strip("-0."):  # -0.000: a tiny negative rounds to zero
        text = text[1:]
    if not unit or not info.unit:
        return text
    return f"{text}%" if info.unit == "%" else f"{text} {info.unit}"


def format_interval(name: str, ci: Any) -> str:
    """``[low, high]`` rounded like the metric, without unit; "" for none."""
    if not ci:
        return ""
    return f"[{format_number(name, ci[0], unit=False)}, {format_number(name, ci[1], unit=False)}]"


def format_estimate(name: str, est: Mapping[str, Any] | None, with_n: bool = True, unit: bool = True) -> str:
    """``25.10 dB [24.31, 25.88] n=40`` from a ``{value, ci95, n}`` estimate (``unit=False``: no unit); "" for none."""
    if not est:
        return ""
    text = f"{format_number(name, est['value'], unit)} {format_interval(name, est.get('ci95'))}".rstrip()
    return f"{text} n={est['n']}" if with_n and est.get("n") is not None else text


def format_difference(name: str, est: Mapping[str, Any] | None, unit: bool = True) -> str:
    """A signed difference (``+2.31 dB [1.10, 3.52]``; percent metrics in points, "pt"); "" for none."""
    if not est:
        return ""
    info = metric_info(name)
    suffix = (" pt" if info.percent else f" {info.unit}" if info.unit else "") if unit else ""
    value = scaled(name, est["value"])
    text = f"{value:+.{info.digits}f}" if info.digits is not None else f"{value:+.4g}"
    return f"{text}{suffix} {format_interval(name, est.get('ci95'))}".strip()


def table_label(name: str, difference: bool = False) -> str:
    """The metric's name with its unit, for a table whose cells carry none ("PSNR (dB)", "accuracy (%)";
    differences of percent metrics in points, "pt")."""
    info = metric_info(name)
    unit = "pt" if difference and info.percent else info.unit
    return f"{info.label} ({unit})" if unit else info.label


__all__ = [
    "ALIASES",
    "METRICS",
    "MetricInfo",
    "clip_to_range",
    "format_difference",
    "format_estimate",
    "format_interval",
    "format_number",
    "metric_info",
    "scaled",
    "table_label",
]
