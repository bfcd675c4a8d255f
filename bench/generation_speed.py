"""Speed against quality of the fast sampling settings (solvers, step caches), against 50-step Euler.

For every setting, in one process and on the same requests and seeds:

- ``passes``: model passes per image (one guidance branch of one request through the model; the
  reference edit is 3 branches x 49 steps = 147);
- ``time``: seconds of the image phase (denoising + VAE decode of all requests, served together as
  one batch per preset) and its ratio to the reference's (``x`` > 1 is faster);
- agreement with the reference image of the same seed: PSNR / SSIM (uint8 RGB; mean and worst);
- the task metric against ground truth (edits: PSNR of the output against the clean target, as
  ``unimedvl eval`` scores restoration) with its 95% bootstrap interval, and whether the mean lies
  inside the reference's interval.

Two sources of requests:

- ``--model CKPT --data test.jsonl``: a trained checkpoint (the demo's) and its MedSynth test
  set: the first ``--per-task`` records of each restoration task (edits with the checkpoint's
  ``eval`` preset at strength 1, i.e. the whole schedule) and ``--prompts`` text-to-image prompts
  (the ``text_to_image`` preset; no ground truth is scored for them).
- ``--release-random``: a random checkpoint with the release's widths (hidden 3584, ViT 1152, the
  FLUX VAE) and ``--layers`` decoder layers, written once under ``--work``; ``--images`` edits and
  prompts at ``--size`` pixels. Passes, time and agreement only (a random model has no task).

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/generation_speed.py --model CKPT
     --data demo_out/data/medsynth/test.jsonl [--per-task 4] [--prompts 8] [--settings a,b,...]
     HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/generation_speed.py --release-random
     [--layers 2] [--size 32] [--images 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.inference.api import UniMedVL
from unimedvl.inference.inferencer import Request
from unimedvl.metrics.image import paired_image_metrics
from unimedvl.metrics.uncertainty import mean_estimate

RESTORATION = ("denoising", "deblurring", "super_resolution", "motion_correction")
# label -> GuidanceConfig overrides (on the task's preset); "euler50" is the reference.
SETTINGS = {
    "euler50": dict(num_timesteps=50),
    "euler20": dict(num_timesteps=20),
    "euler10": dict(num_timesteps=10),
    "teacache0.05": dict(num_timesteps=50, cache="teacache", cache_threshold=0.05),
    "teacache0.1": dict(num_timesteps=50, cache="teacache", cache_threshold=0.1),
    "teacache0.2": dict(num_timesteps=50, cache="teacache", cache_threshold=0.2),
    "taylorseer2": dict(num_timesteps=50, cache="taylorseer", cache_interval=2),
    "taylorseer3": dict(num_timesteps=50, cache="taylorseer", cache_interval=3),
    "taylorseer4o2": dict(num_timesteps=50, cache="taylorseer", cache_interval=4, cache_order=2),
    "heun10": dict(num_timesteps=10, solver="heun"),
    "heun20": dict(num_timesteps=20, solver="heun"),
    "dpm10": dict(num_timesteps=10, solver="dpm++2m"),
    "dpm20": dict(num_timesteps=20, solver="dpm++2m"),
    "dpm30": dict(num_timesteps=30, solver="dpm++2m"),
    "dpm30+taylorseer2": dict(num_timesteps=30, solver="dpm++2m", cache="taylorseer", cache_interval=2),
    "dpm20+teacache0.1": dict(num_timesteps=20, solver="dpm++2m", cache="teacache", cache_threshold=0.1),
}


def demo_requests(inf, data: Path, per_task: int, prompts: int) -> tuple[list, list]:
    """(edit items, prompt items): (instruction, source image, truth image) / (prompt, None, None)."""
    edits, texts, seen = [], [], {}
    for line in data.read_text().splitlines():
        record = json.loads(line)
        task = record.get("main_task_type")
        if task in RESTORATION and seen.get(task, 0) < per_task and record.get("input_img"):
            seen[task] = seen.get(task, 0) + 1
            load = lambda key, record=record: Image.open(data.parent / record[key][0]["path"]).convert("RGB")  # noqa: E731
            edits.append(
                (record["message"][0]["value"].replace("<image>", "").strip(), load("input_img"), load("output_img"))
            )
        elif task == "text_to_image" and len(texts) < prompts:
            texts.append((record["message"][0]["value"].strip(), None, None))
    return edits, texts


def release_requests(size: int, images: int) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    edits = [
        ("Remove the noise.", Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)), None)
        for _ in range(images)
    ]
    return edits, [("An axial chest CT image.", None, None)] * images


def run_setting(inf, edits, texts, overrides: dict, size: int | None):
    """Images and passes per request, and seconds of the image phase, for one setting."""
    requests = []
    edit_preset, text_preset = inf.config.preset("eval"), inf.config.preset("generate")
    for k, (text, source, _) in enumerate(edits):
        requests.append(
            Request(
                [source, text], "edit", guidance=dataclasses.replace(edit_preset, **overrides), seed=k, max_new_tokens=1
            )
        )
    for k, (text, _, _) in enumerate(texts):
        requests.append(
            Request(
                [text],
                "generate",
                guidance=dataclasses.replace(text_preset, **overrides),
                seed=1000 + k,
                height=size,
                width=size,
            )
        )
    plan = inf.prepare(requests)
    inf.decode_text(plan)
    start = time.perf_counter()
    inf.generate_images(plan)
    seconds = time.perf_counter() - start
    return [r.image for r in plan.results], [r.model_passes for r in plan.results], seconds


def write_release_checkpoint(work: Path, layers: int) -> Path:
    """The release's widths with ``layers`` decoder layers, random, bf16 (written once)."""
    from unimedvl.config import model_config, save_yaml, to_dict

    ckpt = work / f"release_widths_{layers}_layers"
    if not (ckpt / "ema.safetensors").is_file():
        cfg = model_config("bagel-7b-mot")
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_hidden_layers=layers))
        work.mkdir(parents=True, exist_ok=True)
        save_yaml(to_dict(cfg), work / f"{ckpt.name}.yaml")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "unimedvl.cli",
                "init-checkpoint",
                "--size",
                str(work / f"{ckpt.name}.yaml"),
                "--out",
                str(ckpt),
                "--dtype",
                "bf16",
            ],
            check=True,
        )
    return ckpt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="trained checkpoint (e.g. demo_out/train/run/step_...)")
    parser.add_argument("--data", help="MedSynth test JSONL (restoration edits and text-to-image prompts)")
    parser.add_argument("--per-task", type=int, default=4, help="edits per restoration task (default: 4)")
    parser.add_argument("--prompts", type=int, default=8, help="text-to-image prompts (default: 8)")
    parser.add_argument("--release-random", action="store_true", help="a random release-width checkpoint instead")
    parser.add_argument("--layers", type=int, default=2, help="--release-random: decoder layers (default: 2)")
    parser.add_argument("--size", type=int, default=32, help="--release-random: image side in pixels (default: 32)")
    parser.add_argument("--images", type=int, default=2, help="--release-random: edits and prompts (default: 2 each)")
    parser.add_argument("--work", default="/tmp/unimedvl_generation_speed", help="--release-random: checkpoint folder")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated labels (default: all)")
    args = parser.parse_args()
    labels = ["euler50"] + [s for s in args.settings.split(",") if s != "euler50"]
    unknown = [s for s in labels if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"unknown setting(s) {unknown}; choose from {', '.join(SETTINGS)}")
    print(f"machine: {machine()}")
    if args.release_random:
        ckpt = write_release_checkpoint(Path(args.work), args.layers)
        sizes = dict(vae_min_size=args.size, vae_max_size=args.size, vit_min_size=56, vit_max_size=70)
        api = UniMedVL.from_pretrained(ckpt, device="cpu", dtype="bf16", **sizes)
        edits, texts = release_requests(args.size, args.images)
        size = args.size
    else:
        if not args.model or not args.data:
            raise SystemExit("give --model and --data, or --release-random")
        api = UniMedVL.from_pretrained(args.model, device="cpu", dtype="fp32")
        edits, texts = demo_requests(api.inferencer, Path(args.data), args.per_task, args.prompts)
        size = None
    inf = api.inferencer
    print(f"model {ckpt if args.release_random else args.model}: {len(edits)} edits, {len(texts)} prompts")
    run_setting(inf, edits[:1], texts[:1], SETTINGS["euler10"], size)  # warm-up (allocations, kernels)
    reference = None
    header = (
        f"{'setting':<18} {'passes':>7} {'x fewer':>7} {'time s':>7} {'x faster':>8} {'PSNR vs ref':>17} "
        f"{'SSIM vs ref':>11} {'edit PSNR vs truth [95% CI]':>30} {'inside':>6}"
    )
    print(header)
    for label in labels:
        images, passes, seconds = run_setting(inf, edits, texts, SETTINGS[label], size)
        if reference is None:
            reference = (images, passes, seconds)
        agree = [paired_image_metrics(a, b) for a, b in zip(images, reference[0])]
        agree_psnr = [min(m["psnr"], 99.0) for m in agree]
        truth = [paired_image_metrics(img, item[2])["psnr"] for img, item in zip(images, edits) if item[2] is not None]
        task = mean_estimate(truth) if truth else None
        if label == "euler50":
            ref_task = task
        inside = (
            "-" if task is None else ("yes" if ref_task["ci95"][0] <= task["value"] <= ref_task["ci95"][1] else "no")
        )
        task_text = "-" if task is None else f"{task['value']:.2f} [{task['ci95'][0]:.2f}, {task['ci95'][1]:.2f}]"
        print(
            f"{label:<18} {np.mean(passes):>7.1f} {np.mean(reference[1]) / np.mean(passes):>7.2f} {seconds:>7.2f} "
            f"{reference[2] / seconds:>8.2f} {np.mean(agree_psnr):>8.2f} (min {min(agree_psnr):>5.2f}) "
            f"{np.mean([m['ssim'] for m in agree]):>11.4f} {task_text:>30} {inside:>6}",
            flush=True,
        )


if __name__ == "__main__":
    main()
