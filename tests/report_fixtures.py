"""Evaluation folders made by hand (no model): result lines, images and the statistics.json that
`unimedvl eval` would write from them, for the report tests.

``make_eval_tree(root, steps=(100, 200), splits=("test", "val"))`` writes
``root/step_<N>/<split>/{results.jsonl, statistics.json, images/}`` for every checkpoint step and
split: denoising and super-resolution edits (with their identity / bicubic baseline scores),
VQA questions of two types, multiple-choice questions, reports, one failed sample. Scores improve
with the step, so curves and paired differences have a direction.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from unimedvl.eval.runner.batch import build_statistics

REPORTS = [
    "Chest X-ray image. No lesion seen.",
    "CT image. One lesion in the left lung.",
    "MRI image. Two lesions in the right lobe.",
]


def result_lines(step: int, split: str, n_edit: int = 6, n_vqa: int = 12, n_choice: int = 4, n_report: int = 3):
    """The result lines of one checkpoint on one split (module docstring)."""
    rng = np.random.default_rng([step, len(split)])
    gain = step / 100.0
    lines = []
    for i in range(n_edit):
        task = "denoising" if i % 2 == 0 else "super_resolution"
        base = 20.0 + i
        lines.append(
            {
                "sample_id": f"{split}_edit_{i}",
                "task_type": task,
                "kind": "edit",
                "instruction": "Remove the noise from this CT image." if task == "denoising" else "Upscale 2x.",
                "understanding_text": "Assessment: CT image with mild noise.",
                "images": {k: f"images/{split}_edit_{i}_{k}.png" for k in ("input", "GT", "pred")},
                "baseline": "identity" if task == "denoising" else "bicubic",
                "metrics": {
                    "psnr": base + gain + float(rng.normal(0, 0.3)),
                    "ssim": 0.5 + 0.05 * gain,
                    "baseline_psnr": base,
                    "baseline_ssim": 0.55,
                },
                "metric_mode": "reference",
                "inference_time": 1.5,
                "error": None,
            }
        )
    for i in range(n_vqa):
        qtype = "modality" if i % 2 == 0 else "presence"
        gold = ["ct", "mri", "x-ray"][i % 3] if qtype == "modality" else ("yes" if i % 4 == 1 else "no")
        correct = bool(rng.random() < (0.3 + 0.25 * gain if qtype == "modality" else 0.5))
        lines.append(
            {
                "sample_id": f"{split}_vqa_{i}",
                "task_type": "image_understanding",
                "kind": "question",
                "instruction": f"Question {i} about the image?",
                "gold": gold,
                "answer": gold if correct else "unsure",
                "question_type": qtype,
                "metrics": {"answer_kind": "closed", "correct": correct},
                "inference_time": 0.2,
                "error": None,
            }
        )
    for i in range(n_choice):
        lines.append(
            {
                "sample_id": f"{split}_mc_{i}",
                "task_type": "multiple_choice",
                "kind": "question",
                "instruction": "Which organ? A. lung B. liver C. heart",
                "gold": "A",
                "answer": "A",
                "metrics": {"answer_kind": "multiple_choice", "correct": i < 2 + step // 200, "n_options": 3},
                "inference_time": 0.2,
                "error": None,
            }
        )
    for i in range(n_report):
        lines.append(
            {
                "sample_id": f"{split}_report_{i}",
                "task_type": "report_generation",
                "kind": "report",
                "instruction": "Write a short report for this image.",
                "gold": REPORTS[i],
                "answer": REPORTS[i] if step > 100 else "CT image. No lesion seen.",
                "metrics": {},
                "inference_time": 0.5,
                "error": None,
            }
        )
    lines.append(
        {
            "sample_id": f"{split}_broken",
            "task_type": "denoising",
            "kind": "invalid",
            "error": "images/missing.png: image file not found",
            "metrics": {},
            "inference_time": None,
        }
    )
    return lines


def write_run(run_dir: Path, step: int, split: str, checkpoint: Path, **sizes) -> dict:
    """One run folder: images, results.jsonl and statistics.json (with a provenance block)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "images").mkdir(exist_ok=True)
    lines = result_lines(step, split, **sizes)
    for line in lines:
        for k, rel in (line.get("images") or {}).items():
            value = {"input": 60, "GT": 140, "pred": 120}[k]
            Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(run_dir / rel)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    stats = build_statistics(lines, timestamp="2025-01-02T03:04:05")
    stats["provenance"] = {
        "checkpoint": {
            "path": str(checkpoint),
            "training_step": step,
            "weights": "ema",
            "weights_sha256": f"{step:012d}",
        },
        "data": {
            "path": f"/data/{split}.jsonl",
            "sha256": "ab" * 32,
            "data_dir": "/data",
            "n_records": len(lines),
            "n_selected": len(lines),
            "n_results": len(lines),
        },
        "settings": {
            "seed": 0,
            "cfg_text_scale": 4.0,
            "cfg_img_scale": 2.0,
            "cfg_interval": [0.0, 1.0],
            "cfg_renorm_type": "text_channel",
            "cfg_renorm_min": 0.0,
            "timestep_shift": 1.0,
            "num_timesteps": 50,
            "vae_min_size": 512,
            "vae_max_size": 1024,
            "vit_min_size": 378,
            "vit_max_size": 980,
            "dtype": "bf16",
        },
        "software": {"unimedvl": "0.1.0", "torch": "2.13.0"},
        "machine": {"cpu": "test CPU", "cpu_count": 2, "device": "cpu", "world_size": 1},
    }
    (run_dir / "statistics.json").write_text(json.dumps(stats, allow_nan=False))
    return stats


def make_eval_tree(root: Path, steps=(100, 200), splits=("test", "val"), **sizes) -> Path:
    """Every checkpoint step on every split under ``root`` (module docstring); returns root."""
    for step in steps:
        for split in splits:
            write_run(
                root / f"step_{step:07d}" / split, step, split, root.parent / "ckpt" / f"step_{step:07d}", **sizes
            )
    return root
