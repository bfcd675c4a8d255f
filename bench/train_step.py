"""Benchmark: training-step throughput and peak memory on CPU, one process, debug and small sizes.

For each size (in its own subprocess, so peak RSS is that size's): a random checkpoint, MedSynth
data through the real loader (``unimedvl.data.loader``), and
- ``trainer``: ``Trainer.train_step`` (data, global normalisation, forward/backward, clip, AdamW, EMA);
- ``bare``: the same pre-fetched batches through model forward/backward + AdamW only (baseline);
reported as tokens/s (median of the timed steps), the ratio trainer/bare, and peak RSS.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/train_step.py [--steps 4] [--sizes debug small]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

TOKENS = {"debug": 1024, "small": 1024}


def measure(size: str, steps: int, work: Path) -> dict:
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.medsynth.generator import generate_medsynth
    from unimedvl.train.config import TrainConfig
    from unimedvl.train.trainer import Trainer

    ckpt = init_checkpoint(size, work / size, seed=0)
    synth = generate_medsynth(work / "synth", 48, 2, seed=0, image_size=64)
    cfg = TrainConfig(
        dataset_config_file=synth["mix"],
        dataset_info_file=synth["dataset_info"],
        model_path=str(ckpt),
        checkpoint_dir=str(work / f"run_{size}"),
        total_steps=1000,
        save_every=1000,
        warmup_steps=0,
        lr=1e-4,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        expected_num_tokens=TOKENS[size],
        max_num_tokens=2 * TOKENS[size],
        max_num_tokens_per_sample=2 * TOKENS[size],
        ema=0.999,
    )
    t = Trainer(cfg).setup()
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warm = 1
    trainer_tps = []
    batches = []
    for i in range(warm + steps):
        m = t.train_step()
        t.step += 1
        if i >= warm:
            trainer_tps.append(m["tokens_per_s"])
    batches = [next(t.data_iter) for _ in range(steps)]
    bare_tps = []
    model, opt = t.model, t.optimizer
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        out = model(batch, generator=torch.Generator().manual_seed(i))
        (out["ce"] + out["mse"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        bare_tps.append(batch.sequence_length / (time.perf_counter() - start))
    params = sum(p.numel() for p in model.parameters())
    return {
        "size": size,
        "params_m": params / 1e6,
        "trainer_tps": statistics.median(trainer_tps),
        "bare_tps": statistics.median(bare_tps),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_setup_mb": rss_setup,
        "tokens_per_batch": statistics.mean(b.sequence_length for b in batches),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per size (after one warm-up step)")
    parser.add_argument("--sizes", nargs="+", default=["debug", "small"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import logging

        logging.disable(logging.INFO)
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.child, args.steps, Path(tmp))))
        return
    print(f"machine: {machine()}")
    print(
        f"{'size':<6} {'params':>8} {'tok/batch':>9} {'trainer tok/s':>14} {'bare tok/s':>11} {'ratio':>6} "
        f"{'peak RSS':>9}"
    )
    for size in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", size, "--steps", str(args.steps)], capture_output=True, text=True
        )
        if proc.returncode:
            print(proc.stderr[-2000:])
            raise SystemExit(proc.returncode)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['size']:<6} {r['params_m']:>7.1f}M {r['tokens_per_batch']:>9.0f} {r['trainer_tps']:>14.0f} "
            f"{r['bare_tps']:>11.0f} {r['trainer_tps'] / r['bare_tps']:>6.2f} {r['peak_rss_mb']:>7.0f}MB"
        )


if __name__ == "__main__":
    main()
