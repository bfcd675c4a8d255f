"""What intervals and baselines cost at the end of an evaluation, and what comparing checkpoints costs.

A synthetic run of benchmark size (no model): 2000 VQA questions of 4 types (closed and open),
500 multiple-choice questions, 300 image edits with their baseline scores, 200 reports. Measured in
one process, alternating, best of ``--repeats``:

1. ``build_statistics`` without the ``estimates`` block (the baseline: statistics.json as before);
2. ``build_statistics`` with it (2000 bootstrap resamples per interval, baselines, paired differences);
3. ``compare_split``: the paired comparison of two such runs (what `unimedvl stats` adds per split).

Run: PYTHONPATH=src .venv/bin/python bench/report_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.eval.statistics import run_statistics
from unimedvl.eval.statistics.comparison import compare_split
from unimedvl.eval.statistics.stats_csv import StatsEntry

WORDS = "the heart is normal in size lungs are clear no lesion seen one mass left right lobe".split()


def lines(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(2000):
        kind = "open" if i % 5 == 4 else "closed"
        gold = ["yes", "no", "ct", "mri"][i % 4] if kind == "closed" else " ".join(rng.choice(WORDS, 3))
        out.append(
            {
                "sample_id": f"q{i}",
                "task_type": "image_understanding",
                "kind": "question",
                "gold": gold,
                "answer": gold if rng.random() < 0.6 else "no",
                "question_type": f"type{i % 4}",
                "metrics": {
                    "answer_kind": kind,
                    "correct": bool(rng.random() < 0.6),
                    **({"recall": float(rng.random())} if kind == "open" else {}),
                },
                "inference_time": 0.1,
                "error": None,
            }
        )
    for i in range(500):
        out.append(
            {
                "sample_id": f"m{i}",
                "task_type": "multiple_choice",
                "kind": "question",
                "gold": "A",
                "answer": "A",
                "metrics": {"answer_kind": "multiple_choice", "correct": bool(rng.random() < 0.5), "n_options": 4},
                "inference_time": 0.1,
                "error": None,
            }
        )
    for i in range(300):
        out.append(
            {
                "sample_id": f"e{i}",
                "task_type": ["denoising", "super_resolution", "deblurring"][i % 3],
                "kind": "edit",
                "baseline": "identity",
                "metrics": {
                    "psnr": float(rng.normal(25, 3)),
                    "ssim": float(rng.uniform(0.4, 0.9)),
                    "baseline_psnr": float(rng.normal(23, 3)),
                    "baseline_ssim": float(rng.uniform(0.4, 0.9)),
                },
                "inference_time": 2.0,
                "error": None,
            }
        )
    for i in range(200):
        out.append(
            {
                "sample_id": f"r{i}",
                "task_type": "report_generation",
                "kind": "report",
                "gold": " ".join(rng.choice(WORDS, 12)),
                "answer": " ".join(rng.choice(WORDS, 10)),
                "metrics": {},
                "inference_time": 1.0,
                "error": None,
            }
        )
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run_a, run_b = lines(0), lines(1)
    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for name, run in (("a", run_a), ("b", run_b)):
            folder = Path(tmp) / name / "test"
            folder.mkdir(parents=True)
            (folder / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in run))
            entries.append(StatsEntry(folder / "statistics.json", name, "test", {}))
        without, with_, compare = [], [], []
        for _ in range(args.repeats):
            with mock.patch.object(run_statistics, "metric_estimates", lambda lines: {}):
                without.append(timed(lambda: run_statistics.build_statistics(run_a)))
            with_.append(timed(lambda: run_statistics.build_statistics(run_a)))
            compare.append(timed(lambda: compare_split(entries, ["a", "b"])))
    n = len(run_a)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"run: {n} result lines (2000 VQA, 500 multiple choice, 300 edits, 200 reports); best of {args.repeats}")
    print(f"build_statistics without estimates (baseline)   {min(without):7.2f} s")
    print(
        f"build_statistics with estimates                 {min(with_):7.2f} s   ratio {min(with_) / min(without):.2f}"
    )
    print(f"compare_split, two such runs (paired)           {min(compare):7.2f} s")


if __name__ == "__main__":
    main()
