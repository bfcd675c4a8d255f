"""The demo's goals, checked on the final checkpoint's statistics.json and reported as met or not.

Baselines and intervals are the evaluation's own (statistics.json ``estimates``, computed by
:mod:`unimedvl.eval.statistics.estimates` for every evaluation): the demo only states what it hopes for and
reads the numbers; nothing is tuned here.

- VQA modality and presence: accuracy at least 20 points above the majority-answer baseline;
- denoising: PSNR above the identity baseline (the noisy input itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unimedvl.metrics.info import format_difference, format_number

VQA_GOAL_TYPES = ("modality", "presence")
VQA_GOAL_MARGIN = 0.20  # accuracy at least 20 points above the majority baseline
PSNR_GOAL_TASKS = ("denoising",)  # PSNR above the identity baseline


def _goal(text: str, metric: str, est: Mapping[str, Any] | None, margin: float) -> dict[str, Any]:
    base = (est or {}).get("baseline")
    # A margin of 0 asks for strictly above the baseline (equal is not better).
    met = bool(
        est and base and (est["value"] >= base["value"] + margin if margin > 0 else est["value"] > base["value"])
    )
    return {
        "goal": text,
        "metric": metric,
        "met": met,
        "value": est and est["value"],
        "ci95": est and est.get("ci95"),
        "n": est and est.get("n"),
        "baseline": base and base["value"],
        "baseline_name": base and base["name"],
        "minus_baseline": (est or {}).get("minus_baseline"),
    }


def check_goals(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The goals (module docstring) on one run's statistics.json (the final checkpoint on MedSynth)."""
    estimates = stats.get("estimates") or {}
    goals = []
    for qtype in VQA_GOAL_TYPES:
        est = ((estimates.get("by_question_type") or {}).get(qtype) or {}).get("accuracy")
        goals.append(
            _goal(
                f"VQA {qtype}: accuracy >= majority baseline + {VQA_GOAL_MARGIN:.0%}", "accuracy", est, VQA_GOAL_MARGIN
            )
        )
    for task in PSNR_GOAL_TASKS:
        est = ((estimates.get("by_task_type") or {}).get(task) or {}).get("psnr")
        goals.append(_goal(f"{task}: PSNR above the identity baseline", "psnr", est, 0.0))
    return goals


def restoration_verdicts(split: str, stats: Mapping[str, Any]) -> list[str]:
    """One plain line per image task of ``split``: its PSNR, its baseline, and whether it beats it.

    Every task with a PSNR estimate is listed (the goals name only denoising; this says the rest)."""
    by_task = (stats.get("estimates") or {}).get("by_task_type") or {}
    lines = []
    for task in sorted(by_task):
        est = (by_task[task] or {}).get("psnr")
        base = (est or {}).get("baseline")
        if not est or not base:
            continue
        verdict = "above" if est["value"] > base["value"] else "not above"
        difference = format_difference("psnr", est.get("minus_baseline"))
        lines.append(
            f"{split} {task}: {format_number('psnr', est['value'])} vs {base['name']} "
            f"{format_number('psnr', base['value'])} (difference {difference}, n={est.get('n')}): "
            f"{verdict} the baseline"
        )
    return lines


def goal_rows(goals: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the goals table: verdict, value, baseline, paired difference with its interval."""
    rows = [
        [
            g["goal"],
            "met" if g["met"] else "NOT MET",
            format_number(g["metric"], g["value"]),
            f"{g['baseline_name'] or ''} {format_number(g['metric'], g['baseline'])}".strip(),
            format_difference(g["metric"], g["minus_baseline"]),
            str(g["n"] or ""),
        ]
        for g in goals
    ]
    return ["goal", "verdict", "value", "baseline", "difference [95% CI]", "n"], rows


def goals_html(goals: Sequence[Mapping[str, Any]]) -> str:
    """The goals as an HTML table for the top of the demo report."""
    from unimedvl.eval.report.tables import html_table

    return html_table(*goal_rows(goals))


__all__ = [
    "PSNR_GOAL_TASKS",
    "VQA_GOAL_MARGIN",
    "VQA_GOAL_TYPES",
    "check_goals",
    "goal_rows",
    "goals_html",
    "restoration_verdicts",
]
