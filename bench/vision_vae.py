"""Benchmark the autoencoder against diffusers and packed vs one-by-one vision encoding.

1. FLUX autoencoder, release widths (ch 128, mult 1,2,4,4, 2 res blocks): encode + decode of one
   256x256 image, ours vs diffusers ``AutoencoderKL`` with the same weights. Runs are interleaved
   in one process and the medians compared (target: ours / diffusers <= 1.1).
2. Vision encoder (hidden 384, 6 layers): 4 images of mixed sizes in one packed call vs one call
   per image.

Usage: PYTHONPATH=src python bench/vision_vae.py [--repeats 3] [--size 256]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

from unimedvl.config import VAEConfig, ViTConfig
from unimedvl.models.autoencoder import Autoencoder, autoencoder_state_dict_to_diffusers
from unimedvl.models.vision import VisionEncoder, pack_images


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin (callers warm each one up first)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_autoencoder(size: int, repeats: int) -> None:
    from diffusers import AutoencoderKL

    cfg = VAEConfig()  # release layout
    torch.manual_seed(0)
    ours = Autoencoder(cfg).eval()
    ref = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks,
        latent_channels=cfg.z_channels,
        scaling_factor=cfg.scale_factor,
        shift_factor=cfg.shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()
    ref.load_state_dict(autoencoder_state_dict_to_diffusers(ours.state_dict()), strict=True)
    x = torch.rand(1, 3, size, size) * 2 - 1

    def run_ours():
        return ours.decode(ours.encode(x))

    def run_ref():
        z = ref.encode(x).latent_dist.mean
        return ref.decode(z).sample

    with torch.inference_mode():
        diff = (run_ours() - run_ref()).abs().max().item()  # also the warm-up run of each
        med = _interleaved({"ours": run_ours, "diffusers": run_ref}, repeats)
    print(f"autoencoder encode+decode {size}x{size} (ch 128, mult 1,2,4,4), median of {repeats}:")
    print(
        f"  ours {med['ours']:.3f} s   diffusers {med['diffusers']:.3f} s   "
        f"ratio ours/diffusers = {med['ours'] / med['diffusers']:.3f} (target <= 1.1)   max |diff| {diff:.2e}"
    )


def bench_vision(repeats: int) -> None:
    cfg = ViTConfig(
        hidden_size=384, intermediate_size=1536, num_attention_heads=6, num_hidden_layers=6, image_size=14 * 32
    )
    torch.manual_seed(0)
    model = VisionEncoder(cfg).eval()
    sizes = [(224, 224), (168, 336), (392, 196), (112, 112)]
    images = [torch.rand(3, h, w) * 2 - 1 for h, w in sizes]
    packed = pack_images(images, max_side=cfg.num_patches_per_side)
    singles = [pack_images([im], max_side=cfg.num_patches_per_side) for im in images]

    def run_packed():
        return model(packed.patches, packed.position_ids, packed.token_counts)

    def run_single():
        return [model(p.patches, p.position_ids, p.token_counts) for p in singles]

    with torch.inference_mode():
        diff = (run_packed() - torch.cat(run_single())).abs().max().item()  # also the warm-up run of each
        med = _interleaved({"packed": run_packed, "single": run_single}, repeats)
    print(
        f"vision encoder (hidden 384, 6 layers), 4 images {sizes} = {packed.token_counts} tokens, median of {repeats}:"
    )
    print(
        f"  packed {med['packed'] * 1e3:.1f} ms   one-by-one {med['single'] * 1e3:.1f} ms   "
        f"ratio packed/one-by-one = {med['packed'] / med['single']:.3f}   max |diff| {diff:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (after one warm-up)")
    parser.add_argument("--size", type=int, default=256, help="autoencoder image side in pixels")
    args = parser.parse_args()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        commit = "uncommitted"
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, commit {commit}"
    )
    bench_autoencoder(args.size, args.repeats)
    bench_vision(max(args.repeats, 5))


if __name__ == "__main__":
    main()
