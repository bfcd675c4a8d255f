"""Does a memory plan give the full model's answers? int8 (default) vs bf16 on a trained checkpoint.

Every question of the test set (greedy answers: identical or not) and ``--edits`` restoration
records (the evaluation's two-pass edit, PSNR against the ground truth), both models in bf16 with
the same seeds (:func:`unimedvl.eval.statistics.plan_agreement.compare_plan`). Goals (issue 18): answers equal
on >= 90% of the MedSynth VQA questions; edit PSNR within 0.5 dB.

Run (the demo's model; a checkpoint older than inference_config.json needs its sizes):
    HF_HUB_OFFLINE=1 PYTHONPATH=src nice -n 15 .venv/bin/python bench/memory_agreement.py \
        --model demo_out/train/run/step_0001400 --data demo_out/data/medsynth/test.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--data", required=True, help="test JSONL (MedSynth's test.jsonl)")
    parser.add_argument("--quantize", default="int8", help="the plan compared with bf16")
    parser.add_argument("--components", default="all", help="the plan's components")
    parser.add_argument("--edits", type=int, default=30, help="restoration records edited (default 30)")
    parser.add_argument("--num-timesteps", type=int, default=20, help="denoising steps of each edit")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--strength", type=float, default=1.0, help="SDEdit strength of the edits (1: pure noise)")
    for name in ("--vae-min-size", "--vae-max-size", "--vit-min-size", "--vit-max-size"):
        parser.add_argument(name, type=int, default=None, help="image size override (default: the checkpoint's)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine
    from unimedvl.eval.runner.job import model_settings
    from unimedvl.eval.runner.options import EvalOptions
    from unimedvl.eval.statistics.plan_agreement import compare_plan

    torch.set_num_threads(args.threads)
    sizes = {
        "vae_min_size": args.vae_min_size,
        "vae_max_size": args.vae_max_size,
        "vit_min_size": args.vit_min_size,
        "vit_max_size": args.vit_max_size,
    }
    options = EvalOptions(
        models=[Path(args.model)],
        out="",
        dtype="bf16",
        sizes=sizes,
        max_new_tokens=args.max_new_tokens,
        strength=args.strength,
        guidance={"num_timesteps": args.num_timesteps},
    )
    settings = model_settings(options, cuda=False, model_path=Path(args.model))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    plan = {"quantize": args.quantize, "components": args.components}
    result = compare_plan(args.model, args.data, plan, settings, max_edits=args.edits)
    print(
        f"plan {args.components}-{args.quantize} vs {args.components}-bf16 on {args.model} "
        f"({time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f} at the end)"
    )
    print(f"questions: {result['questions']}, identical greedy answers: {result['agreement']:.1%} (goal >= 90%)")
    print(
        f"edits: {result['edits']}, mean PSNR bf16 {result['psnr_reference']:.3f} dB, {args.quantize} "
        f"{result['psnr_plan']:.3f} dB, difference {result['psnr_difference']:+.3f} dB (goal within 0.5 dB)"
    )
    if result["failed"]:
        print(f"failed samples: {len(result['failed'])}")
    for sample_id, ref, got in result["disagreements"][:10]:
        print(f"  {sample_id}: {ref!r} -> {got!r}")


if __name__ == "__main__":
    main()
