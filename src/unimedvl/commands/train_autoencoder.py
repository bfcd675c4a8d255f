"""``unimedvl train-autoencoder``: train a small FLUX-layout VAE on your images, or adapt one
(:func:`unimedvl.train.autoencoder.train_autoencoder`; the flags are :class:`AutoencoderTrainConfig`'s)."""

from __future__ import annotations

import argparse
import sys

from unimedvl.config import VAEConfig
from unimedvl.errors import ConfigError
from unimedvl.train.autoencoder_config import (
    RESIZE_MODES,
    AutoencoderTrainConfig,
    default_vae_config,
)


def _ch_mult(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--ch-mult {text!r}: give comma-separated positive integers, one per level, e.g. 1,1,2,2")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``unimedvl train-autoencoder`` to the CLI."""
    d = AutoencoderTrainConfig.__dataclass_fields__
    v = default_vae_config()
    p = subparsers.add_parser(
        "train-autoencoder",
        help="train a small FLUX-layout VAE (ae.safetensors) on your images, or adapt one (--init)",
        description="Train a small FLUX-layout autoencoder on your images and save it as ae.safetensors.",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="DIR_OR_GLOB",
        help="image folders (recursive), files or quoted glob patterns",
    )
    p.add_argument("--data", nargs="+", default=[], metavar="JSONL", help="JSONL files: all input_img/output_img")
    p.add_argument("--data-dir", help="folder the JSONL image paths are relative to (default: the JSONL's folder)")
    p.add_argument("--out", required=True, help="output weights, e.g. ckpt/ae.safetensors")
    p.add_argument("--report", help="JSON report path (default: --out with .json)")
    p.add_argument(
        "--init",
        help="continue from this ae.safetensors (adapt a VAE to a modality; its layout wins; default: train a fresh one)",
    )
    p.add_argument("--steps", type=int, default=d["steps"].default, help="optimiser steps")
    p.add_argument("--image-size", type=int, default=d["image_size"].default, help="training crop side (multiple of 8)")
    p.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="train on random crops of this side (default --image-size); cost per image scales with pixels",
    )
    p.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=d["resize"].default,
        help="crop: random crops at native scale; resize: squash each image to the size",
    )
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="images per step")
    p.add_argument("--lr", type=float, default=d["lr"].default, help="peak learning rate (warmup, cosine decay)")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=d["warmup_steps"].default,
        help="linear warmup steps (keep well below --steps)",
    )
    p.add_argument("--ch", type=int, default=v.ch, help="base width (widths must be multiples of 32)")
    p.add_argument("--ch-mult", default=",".join(map(str, v.ch_mult)), help="width multiplier per level (4 levels)")
    p.add_argument("--num-res-blocks", type=int, default=v.num_res_blocks, help="residual blocks per level")
    p.add_argument(
        "--latent-patch-size",
        type=int,
        default=d["latent_patch_size"].default,
        help="the unified model's latent_patch_size; downsample (2^(levels-1)) x it must be 16",
    )
    p.add_argument("--z-channels", type=int, default=v.z_channels, help="latent channels")
    p.add_argument("--kl-weight", type=float, default=d["kl_weight"].default, help="weight of the per-element KL term")
    p.add_argument("--mse-weight", type=float, default=d["mse_weight"].default, help="extra squared-error term")
    p.add_argument("--ssim-weight", type=float, default=d["ssim_weight"].default, help="weight of 1 - SSIM (0: off)")
    p.add_argument(
        "--heldout-fraction",
        type=float,
        default=d["heldout_fraction"].default,
        help="images kept out of training to measure reconstruction PSNR",
    )
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images (default: all)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--seed", type=int, default=d["seed"].default, help="seeds weights, split, batches and noise")
    p.add_argument(
        "--log-every", type=int, default=d["log_every"].default, help="a log line every N steps (0: only the end)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    p.add_argument(
        "--save-every",
        type=int,
        default=d["save_every"].default,
        help="write the resumable state OUT.train-state.pt every N steps (0: only on SIGTERM)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.train-state.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a finished --out (and an interrupted run's state)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unimedvl train-autoencoder``."""
    vae = VAEConfig(
        ch=args.ch,
        ch_mult=_ch_mult(args.ch_mult),
        num_res_blocks=args.num_res_blocks,
        z_channels=args.z_channels,
        scale_factor=1.0,
        shift_factor=0.0,
    )
    cfg = AutoencoderTrainConfig(
        images=tuple(args.images),
        data=tuple(args.data),
        data_dir=args.data_dir,
        out=args.out,
        report=args.report,
        init=args.init,
        vae=vae,
        latent_patch_size=args.latent_patch_size,
        image_size=args.image_size,
        crop_size=args.crop_size,
        resize=args.resize,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        kl_weight=args.kl_weight,
        mse_weight=args.mse_weight,
        ssim_weight=args.ssim_weight,
        flip=not args.no_flip,
        seed=args.seed,
        heldout_fraction=args.heldout_fraction,
        max_images=args.max_images,
        log_every=args.log_every,
        save_every=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    for notice in cfg.setting_warnings():
        print(f"warning: {notice}", file=sys.stderr)
    from unimedvl.train.autoencoder import Stopped, train_autoencoder
    from unimedvl.train.stop_request import EXIT_STATUS

    try:
        result = train_autoencoder(cfg, progress=not args.no_progress)
    except Stopped as stopped:
        print(stopped, file=sys.stderr)
        return EXIT_STATUS
    r = result.report
    print(
        f"wrote {cfg.out} and {cfg.report_path}: held-out PSNR {r['heldout_psnr']:.2f} dB "
        f"(before {r['heldout_psnr_initial']:.2f}, blur baseline {r['heldout_psnr_blur_baseline']:.2f}); "
        f"shift_factor {r['shift_factor']:.4f}, scale_factor {r['scale_factor']:.4f}"
    )
    return 0
