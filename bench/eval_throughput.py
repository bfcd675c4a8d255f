"""Benchmark ``unimedvl eval`` throughput: one process vs two torchrun processes, debug model, CPU.

Writes a random debug checkpoint and a small MedSynth test set (every task, 64 px) to a
temporary folder, then runs the same evaluation as separate commands:

1. one process, one thread (the baseline);
2. ``torchrun --standalone --nproc_per_node=2`` (one thread per process, torchrun's default);
3. with ``--default-threads`` also one process with torch's default thread count. On a busy
   shared machine that run can be many times slower than one thread (intra-op threads wait at
   barriers for descheduled peers), so it is off by default to keep the benchmark short.

Two rates per run, in samples per minute: ``loop`` = samples / the slowest rank's evaluation
loop (read from the ``rank r: n sample(s) in T s`` line each rank prints), ``end-to-end`` =
samples / the command's wall time (Python start, model load and the final merge included,
which dominate on a set this small). The per-sample results must not depend on the process
count: the PSNR means of the runs are compared and printed.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/eval_throughput.py [--n-test 24]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.medsynth.generator import generate_medsynth

ROOT = Path(__file__).resolve().parents[1]
RANK_LINE = re.compile(r"rank (\d+): (\d+) sample\(s\) in ([0-9.]+) s")


def run_eval(label: str, launcher: list[str], eval_args: list[str], threads: int | None) -> dict:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    start = time.perf_counter()
    proc = subprocess.run(
        [*launcher, "-m", "unimedvl.commands.eval", *eval_args], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{label} failed:\n{proc.stderr[-3000:]}")
    ranks = {int(r): (int(n), float(t)) for r, n, t in RANK_LINE.findall(proc.stderr)}
    samples = sum(n for n, _ in ranks.values())
    loop = max(t for _, t in ranks.values())
    return {
        "label": label,
        "samples": samples,
        "loop_s": loop,
        "wall_s": wall,
        "loop_rate": 60.0 * samples / loop,
        "wall_rate": 60.0 * samples / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-test", type=int, default=24, help="MedSynth test records (shared across the 9 tasks)")
    parser.add_argument("--num-timesteps", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--default-threads", action="store_true", help="also time one process with torch's default thread count"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = init_checkpoint("debug", tmp / "debug", seed=0)
        generate_medsynth(tmp / "medsynth", n_train=0, n_test=opts.n_test, image_size=64)
        common = [
            "--model",
            str(ckpt),
            "--data",
            str(tmp / "medsynth" / "test.jsonl"),
            "--device",
            "cpu",
            "--vae-min-size",
            "64",
            "--vae-max-size",
            "64",
            "--vit-min-size",
            "56",
            "--vit-max-size",
            "70",
            "--num-timesteps",
            str(opts.num_timesteps),
            "--max-new-tokens",
            str(opts.max_new_tokens),
            "--no-progress",
        ]
        python = [sys.executable]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        runs = [
            run_eval("1 process (1 thread)", python, [*common, "--out", str(tmp / "one")], 1),
            run_eval("2 processes (torchrun, 1 thread each)", torchrun, [*common, "--out", str(tmp / "two")], 1),
        ]
        if opts.default_threads:
            runs.append(
                run_eval(
                    f"1 process ({torch.get_num_threads()} threads)",
                    python,
                    [*common, "--out", str(tmp / "threads")],
                    None,
                )
            )
        psnr = [
            json.loads((tmp / d / "debug" / "test" / "statistics.json").read_text())["overall"]["psnr_mean"]
            for d in ("one", "two", "threads")[: len(runs)]
        ]
    print(
        f"eval throughput: debug model, CPU fp32, MedSynth {opts.n_test} records at 64 px (all 9 tasks), "
        f"{opts.num_timesteps} timesteps, {opts.max_new_tokens} new tokens, batch size 1"
    )
    print(f"machine: {machine()}")
    for r in runs:
        print(
            f"{r['label']:<40} loop {r['loop_rate']:7.1f} samples/min ({r['loop_s']:6.2f} s)   "
            f"end-to-end {r['wall_rate']:6.1f} samples/min ({r['wall_s']:6.2f} s)"
        )
    one, two = runs[:2]
    print(
        f"ratio 2 processes / 1 process: loop {two['loop_rate'] / one['loop_rate']:.2f}, "
        f"end-to-end {two['wall_rate'] / one['wall_rate']:.2f}"
    )
    print(f"psnr_mean per run: {', '.join(f'{p:.6f}' for p in psnr)}")


if __name__ == "__main__":
    main()
