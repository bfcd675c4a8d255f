"""Can a small ViT trained from scratch see MedSynth's lesions? The evidence behind the lesion design rule.

A presence probe: the ``demo`` size's vision encoder (2 layers, width 128, 14 px patches, random
init) + max-pool over patch tokens + a linear head, trained with AdamW on "has this image a
lesion?" labels, on 64 px MedSynth images fed at the demo's ViT size (70 px: 5 x 5 patches). The
images come from ``medsynth.images.make_scene`` / ``render`` with the lesion count distribution of
the VQA task, once with the radii of the previous design (0.035-0.085 of the side: 2-5 px) and
once with the current ``LESION_SIZES`` (>= ``LESION_MIN_RADIUS``); everything else (anatomy,
seeds, steps, optimiser) is the same, in one process. Reported: held-out accuracy next to the
majority answer, per modality.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/lesion_visibility.py [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.config import model_config
from unimedvl.imaging.transforms import ImageTransform
from unimedvl.medsynth import images as si
from unimedvl.medsynth.generator import _COUNT_P, vit_sizes
from unimedvl.models.vision import VisionEncoder, pack_images

PREVIOUS_SIZES = {"small": (0.035, 0.05), "large": (0.06, 0.085)}  # the design before the rule
IMAGE_SIZE = 64


def images(n: int, seed: int, sizes: dict) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """``n`` ViT inputs, presence labels and modalities (modalities in turn, lesion counts as in VQA)."""
    vit = ImageTransform(**vit_sizes(IMAGE_SIZE))
    saved = si.LESION_SIZES
    si.LESION_SIZES = sizes
    try:
        rng = np.random.default_rng(seed)
        xs, ys, mods = [], [], []
        for i in range(n):
            modality = si.MODALITIES[i % len(si.MODALITIES)]
            scene = si.make_scene(modality, IMAGE_SIZE, rng, int(rng.choice(len(_COUNT_P), p=_COUNT_P)))
            xs.append(vit(Image.fromarray(si.render(scene))))
            ys.append(int(bool(scene.lesions)))
            mods.append(modality)
    finally:
        si.LESION_SIZES = saved
    return xs, torch.tensor(ys), mods


def probe(train, test, steps: int, batch: int, lr: float, seed: int) -> dict:
    """Train the probe on ``train``; accuracy on ``test`` overall and per modality."""
    torch.manual_seed(seed)
    cfg = model_config("demo").vit
    vit, head = VisionEncoder(cfg), torch.nn.Linear(cfg.hidden_size, 2)
    optimizer = torch.optim.AdamW([*vit.parameters(), *head.parameters()], lr=lr)

    def logits(xs):
        packed = pack_images(xs, cfg.patch_size, cfg.num_patches_per_side)
        tokens = vit(packed.patches, packed.position_ids, packed.token_counts)
        return head(torch.stack([t.max(0).values for t in tokens.split(packed.token_counts)]))

    (xs, ys, _), (tx, ty, tm) = train, test
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(xs), (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(logits([xs[i] for i in idx]), ys[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = torch.cat([logits(tx[i : i + 100]).argmax(-1) for i in range(0, len(tx), 100)])
    hit = (pred == ty).float()
    per = {m: float(hit[[j for j, x in enumerate(tm) if x == m]].mean()) for m in si.MODALITIES}
    return {
        "accuracy": float(hit.mean()),
        "majority": float(max(ty.float().mean(), 1 - ty.float().mean())),
        "per_modality": per,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="probe optimiser steps (default: 300)")
    parser.add_argument("--batch", type=int, default=32, help="images per step (default: 32)")
    parser.add_argument("--train", type=int, default=1500, help="training images (default: 1500)")
    parser.add_argument("--test", type=int, default=400, help="held-out images (default: 400)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 0.001)")
    parser.add_argument("--seed", type=int, default=0, help="data and probe seed (default: 0)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"probe: demo ViT from scratch, {args.steps} steps x {args.batch} images, lr {args.lr:g}; "
        f"{args.train} train / {args.test} test images of {IMAGE_SIZE} px at ViT {vit_sizes(IMAGE_SIZE)['max_image_size']} px"
    )
    print(
        f"{'lesion radii (fraction of side)':<36} {'accuracy':>8} {'majority':>8}  "
        + " ".join(f"{m:>9}" for m in si.MODALITIES)
        + "  seconds"
    )
    for name, sizes in (
        ("previous 0.035-0.085", PREVIOUS_SIZES),
        (f"rule >= {si.LESION_MIN_RADIUS:g} (current)", si.LESION_SIZES),
    ):
        start = time.perf_counter()
        train = images(args.train, 1000 + args.seed, sizes)
        test = images(args.test, 2000 + args.seed, sizes)
        result = probe(train, test, args.steps, args.batch, args.lr, args.seed)
        print(
            f"{name:<36} {result['accuracy']:>8.1%} {result['majority']:>8.1%}  "
            + " ".join(f"{result['per_modality'][m]:>9.1%}" for m in si.MODALITIES)
            + f"  {time.perf_counter() - start:.0f}"
        )


if __name__ == "__main__":
    main()
