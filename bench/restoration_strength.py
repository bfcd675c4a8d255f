"""Restoration PSNR against the SDEdit ``strength`` of edit, next to the identity and VAE round-trip baselines.

For each restoration record of a test JSONL (MedSynth or the demo's real set; the first ``--per-task``
of every task), in one process:

- ``identity``: the degraded input itself scored against the clean target (what the demo's report
  calls the identity baseline);
- ``vae``: the input's VAE round trip (encode the posterior mean, decode): what a model that
  changes nothing in latent space returns, i.e. the ceiling that the autoencoder sets;
- ``s=X``: the model's output with ``UniMedVL`` editing at strength X, following ``unimedvl eval``'s
  editing protocol (the understanding pass's text is appended to the instruction, the
  checkpoint's restoration preset unless guidance flags say otherwise, ``--num-timesteps`` points,
  per-sample seeds).

PSNR / SSIM as ``unimedvl eval`` computes them (uint8 RGB, reference mode); seconds are the
denoising time per image at each strength (lower strength runs fewer steps).

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/restoration_strength.py --model CKPT
     --data demo_out/data/medsynth/test.jsonl [--strengths 1,0.5,0.3,0.2,0.1] [--per-task 10]
     [--cfg-text-scale 1 --cfg-img-scale 1 ...: any guidance flag of unimedvl eval]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.commands.options import add_guidance_arguments, guidance_overrides
from unimedvl.guidance import RESTORATION as RESTORATION_PRESET
from unimedvl.inference.api import UniMedVL
from unimedvl.inference.inferencer import Request
from unimedvl.metrics.image import paired_image_metrics

RESTORATION = ("denoising", "deblurring", "super_resolution", "motion_correction")


def _records(path: Path, per_task: int, tasks: tuple[str, ...]) -> list[dict]:
    chosen, seen = [], {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        task = record.get("main_task_type")
        if task in tasks and seen.get(task, 0) < per_task and record.get("input_img") and record.get("output_img"):
            seen[task] = seen.get(task, 0) + 1
            chosen.append(record)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained checkpoint (e.g. demo_out/train/run/step_...)")
    parser.add_argument("--data", required=True, help="test JSONL with restoration records")
    parser.add_argument("--data-dir", help="folder image paths are relative to (default: the JSONL's)")
    parser.add_argument("--strengths", default="1,0.5,0.3,0.2,0.1", help="comma-separated (default: 1,0.5,0.3,0.2,0.1)")
    parser.add_argument("--per-task", type=int, default=10, help="records per task (default: 10)")
    parser.add_argument("--tasks", default=",".join(RESTORATION), help=f"tasks (default: {','.join(RESTORATION)})")
    add_guidance_arguments(parser, RESTORATION_PRESET, "the checkpoint's restoration preset")
    args = parser.parse_args()
    strengths = [float(s) for s in args.strengths.split(",")]
    data = Path(args.data)
    data_dir = Path(args.data_dir) if args.data_dir else data.parent
    api = UniMedVL.from_pretrained(args.model, device="cpu", dtype="fp32")
    inf = api.inferencer
    # 20 schedule points unless --num-timesteps says otherwise (the demo's evaluation setting)
    guidance = inf.config.guidance_for("eval", {"num_timesteps": 20, **guidance_overrides(args)})
    stride = inf.model.config.vae_image_stride
    print(f"machine: {machine()}")
    print(f"model {args.model}; data {data}; preset {guidance}")
    rows: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for k, record in enumerate(_records(data, args.per_task, tuple(args.tasks.split(",")))):
        source = Image.open(data_dir / record["input_img"][0]["path"]).convert("RGB")
        truth = Image.open(data_dir / record["output_img"][0]["path"]).convert("RGB")
        instruction = record["message"][0]["value"].replace("<image>", "").strip()
        row = rows.setdefault(record["main_task_type"], {})
        row.setdefault("identity", []).append(paired_image_metrics(source, truth)["psnr"])
        pixels = inf.image_splits(source, generation=True)[0][0].image
        (tokens,) = inf.model.encode_images([pixels])
        grid = (pixels.shape[1] // stride, pixels.shape[2] // stride)
        row.setdefault("vae", []).append(paired_image_metrics(inf.decode_latents(tokens, [grid])[0], truth)["psnr"])
        text = inf.run([Request([source, instruction], max_new_tokens=24, seed=k)])[0].text
        for strength in strengths:
            start = time.perf_counter()
            out = inf.run(
                [Request([source, f"{instruction}\n\n{text}"], "edit", guidance=guidance, seed=k, strength=strength)]
            )[0].image
            seconds.setdefault(f"s={strength:g}", []).append(time.perf_counter() - start)
            row.setdefault(f"s={strength:g}", []).append(paired_image_metrics(out, truth)["psnr"])
    columns = ["identity", "vae", *[f"s={s:g}" for s in strengths]]
    print(f"{'task (PSNR dB)':<20} {'n':>3} " + " ".join(f"{c:>8}" for c in columns))
    for task, row in rows.items():
        print(f"{task:<20} {len(row['identity']):>3} " + " ".join(f"{np.mean(row[c]):>8.2f}" for c in columns))
    print(f"{'seconds per image':<24} " + " " * 18 + " ".join(f"{np.mean(seconds[c]):>8.2f}" for c in columns[2:]))


if __name__ == "__main__":
    main()
