"""Honest demo results: every metric of an evaluation next to the baseline it must beat.

- VQA: accuracy per question type vs always answering that type's most common gold answer.
- Restoration and other edits: PSNR/SSIM of the prediction vs the "identity" baseline, i.e. the
  degraded input itself scored against the ground truth (a model that returns its input).
The goals of the default demo are checked here and reported as met or not met; nothing is tuned.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from unimedvl.fileio import read_json_lines

# Demo goals (issue: "It must learn, and say so honestly").
VQA_GOAL_TYPES = ("modality", "presence")
VQA_GOAL_MARGIN = 0.20  # accuracy at least 20 points above the majority baseline
PSNR_GOAL_TASKS = ("denoising",)  # PSNR above the identity baseline


def _read_results(root: Path, split: str) -> list[dict]:
    """The result lines of the model evaluated on ``split`` (``root/<model_id>/<split>/results.jsonl``)."""
    lines = []
    for file in sorted(root.glob(f"*/{split}/results.jsonl")):
        for line in read_json_lines(file)[0]:
            line["_run_dir"] = str(file.parent)  # image paths in a result line are relative to it
            lines.append(line)
    return lines


def _identity_scores(line: Mapping[str, Any]) -> tuple[float, float] | None:
    from unimedvl.eval.image_metrics import paired_image_metrics

    images = line.get("images") or {}
    if not images.get("input") or not images.get("GT"):
        return None
    run_dir = Path(line.get("_run_dir", "."))
    degraded = np.asarray(Image.open(run_dir / images["input"]).convert("RGB"))
    truth = np.asarray(Image.open(run_dir / images["GT"]).convert("RGB"))
    scores = paired_image_metrics(degraded, truth, mode="reference")
    return float(scores["psnr"]), float(scores["ssim"])


def _finite_mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def restoration_table(lines: list[dict]) -> dict[str, dict]:
    """Per task: prediction PSNR/SSIM and the identity baseline's, over the same samples."""
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        metrics = line.get("metrics") or {}
        if line.get("error") or "psnr" not in metrics:
            continue
        identity = _identity_scores(line)
        if identity is None:
            continue
        g = groups[line.get("task_type") or "unknown"]
        g["psnr"].append(metrics["psnr"])
        g["ssim"].append(metrics.get("ssim"))
        g["identity_psnr"].append(identity[0])
        g["identity_ssim"].append(identity[1])
    return {task: {"count": len(g["psnr"]), **{k: _finite_mean(v) for k, v in g.items()}}
            for task, g in sorted(groups.items())}


def vqa_table(lines: list[dict]) -> dict[str, dict]:
    """Per question type: accuracy and the majority-answer baseline over the same questions."""
    from unimedvl.eval.text_metrics import normalize_answer

    groups: dict[str, list] = defaultdict(list)
    for line in lines:
        metrics = line.get("metrics") or {}
        if line.get("error") or "correct" not in metrics or not line.get("question_type"):
            continue
        groups[line["question_type"]].append(line)
    table = {}
    for qtype, group in sorted(groups.items()):
        golds = [normalize_answer(str(l.get("gold", ""))) for l in group]
        majority = max(golds.count(g) for g in set(golds)) / len(group)
        table[qtype] = {"count": len(group), "accuracy": float(np.mean([bool(l["metrics"]["correct"]) for l in group])),
                        "majority_baseline": majority}
    return table


def summarise(evaluated: Mapping[str, str], trained: Mapping[str, str]) -> dict:
    """The demo summary: tables, goal verdicts and printable lines."""
    medsynth = _read_results(Path(evaluated["root"]), evaluated["medsynth"])
    real = _read_results(Path(evaluated["root"]), evaluated["real"])
    vqa = vqa_table(medsynth)
    restoration = {"medsynth": restoration_table(medsynth), "real": restoration_table(real)}
    goals = []
    for qtype in VQA_GOAL_TYPES:
        row = vqa.get(qtype)
        met = row is not None and row["accuracy"] >= row["majority_baseline"] + VQA_GOAL_MARGIN
        goals.append({"goal": f"VQA {qtype}: accuracy >= majority baseline + {VQA_GOAL_MARGIN:.0%}", "met": met,
                      "value": row and row["accuracy"], "baseline": row and row["majority_baseline"]})
    for task in PSNR_GOAL_TASKS:
        row = restoration["medsynth"].get(task)
        met = bool(row and row["psnr"] is not None and row["identity_psnr"] is not None
                   and row["psnr"] > row["identity_psnr"])
        goals.append({"goal": f"{task}: PSNR above the identity baseline", "met": met,
                      "value": row and row["psnr"], "baseline": row and row["identity_psnr"]})
    lines = ["VQA (MedSynth test)          accuracy   majority baseline   n"]
    for qtype, row in vqa.items():
        lines.append(f"  {qtype:<26} {row['accuracy']:8.1%}   {row['majority_baseline']:8.1%}          {row['count']}")
    for name, table in restoration.items():
        lines.append(f"Images ({name})               PSNR (identity)       SSIM (identity)       n")
        for task, row in table.items():
            lines.append(f"  {task:<26} {_fmt(row['psnr'])} ({_fmt(row['identity_psnr'])})   "
                         f"{_fmt(row['ssim'], 3)} ({_fmt(row['identity_ssim'], 3)})   {row['count']}")
    lines.append("Goals")
    for goal in goals:
        lines.append(f"  [{'met' if goal['met'] else 'NOT MET'}] {goal['goal']}")
    return {"vqa": vqa, "restoration": restoration, "goals": goals, "lines": lines,
            "checkpoint": trained["checkpoint"]}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "   n/a" if value is None else f"{value:6.{digits}f}"


def summary_html(summary: Mapping[str, Any]) -> str:
    """The summary as HTML tables (VQA, images per split, goals) for the top of the demo report."""
    from unimedvl.eval.report import html_table

    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    def num(v, digits=2):
        return "n/a" if v is None else f"{v:.{digits}f}"

    parts = ["<h3>VQA on held-out MedSynth (baseline: always the most common answer)</h3>", html_table(
        ["question type", "accuracy", "majority baseline", "n"],
        [(q, pct(r["accuracy"]), pct(r["majority_baseline"]), r["count"]) for q, r in summary["vqa"].items()])]
    for split, table in summary["restoration"].items():
        parts.append(f"<h3>Images, {split} (baseline: the degraded input itself)</h3>")
        parts.append(html_table(
            ["task", "PSNR", "identity PSNR", "SSIM", "identity SSIM", "n"],
            [(t, num(r["psnr"]), num(r["identity_psnr"]), num(r["ssim"], 3), num(r["identity_ssim"], 3), r["count"])
             for t, r in table.items()]))
    parts.append("<h3>Goals</h3>")
    parts.append(html_table(["goal", "verdict", "value", "baseline"],
                            [(g["goal"], "met" if g["met"] else "NOT MET", num(g["value"], 3), num(g["baseline"], 3))
                             for g in summary["goals"]]))
    return "\n".join(parts)
