"""What ``train-autoencoder`` trains: its config and layout checks.

Torch-free, so that ``unimedvl train-autoencoder --help`` (:mod:`unimedvl.commands.train_autoencoder`)
is instant; the training lives in :mod:`unimedvl.train.autoencoder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from unimedvl.config import VAEConfig
from unimedvl.errors import ConfigError

RESIZE_MODES = ("crop", "resize")
VAE_IMAGE_STRIDE = 16  # pixels per latent token of the unified model: VAE downsample x latent_patch_size


def default_vae_config() -> VAEConfig:
    """The small 8x layout trained by default: ch 64, ch_mult 1,1,1,1, one res block, 16 latent channels.

    Chosen by measured PSNR per CPU second at 64 px: width 32 (ch_mult 1,1,1,1 or 1,2,2,2) puts one
    channel in each of GroupNorm's 32 groups at full resolution, which normalises away every
    channel's per-image mean and learns clearly slower (17.6 / 18.2 vs 19.2 dB in the same time).
    """
    return VAEConfig(ch=64, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=16, scale_factor=1.0, shift_factor=0.0)


@dataclass
class AutoencoderTrainConfig:
    """What ``train_autoencoder`` trains on, the network layout, and the optimisation."""

    images: tuple[str, ...] = ()  # image folders (searched recursively), files or glob patterns
    data: tuple[str, ...] = ()  # JSONL files; every input_img / output_img of every record is used
    data_dir: str | None = None  # folder the JSONL image paths are relative to (default: each JSONL's folder)
    out: str = "ae.safetensors"  # where the trained weights go (release key names)
    report: str | None = None  # JSON report path; default: ``out`` with the suffix .json
    init: str | None = None  # start from this ae.safetensors (its layout replaces ``vae``): adapt a VAE
    vae: VAEConfig = field(default_factory=default_vae_config)  # layout of a fresh network
    latent_patch_size: int = 2  # of the unified model this VAE is for; downsample x it must be 16
    image_size: int = 64  # side of the square image views trained and evaluated on (multiple of 8)
    crop_size: int | None = None  # train on random crops of this side of those views (default image_size; cheaper)
    resize: str = "crop"  # crop: random image_size crops at native scale; resize: whole image squashed
    steps: int = 450  # optimiser steps
    batch_size: int = 8  # images per step
    lr: float = 2e-3  # peak AdamW learning rate (linear warmup, then cosine decay to lr * min_lr_ratio)
    warmup_steps: int = 20  # linear warmup length
    min_lr_ratio: float = 0.05  # final learning rate as a fraction of lr
    kl_weight: float = 1e-5  # weight of the per-element KL term (1e-6..1e-4 sensible)
    mse_weight: float = 0.0  # weight of an extra squared-error term (PSNR is an MSE metric); 0 disables it
    ssim_weight: float = 0.0  # weight of (1 - SSIM); 0 disables it
    grad_clip: float = 1.0  # max gradient norm (0 disables clipping)
    flip: bool = True  # random horizontal flips (training only)
    seed: int = 0  # seeds the initial weights, the held-out split, batches, crops and posterior noise
    heldout_fraction: float = 0.05  # images kept out of training to measure reconstruction PSNR
    max_heldout: int = 64  # at most this many held-out images
    stats_images: int = 256  # training images encoded to measure the latent mean / std
    max_images: int | None = None  # use at most this many images (after shuffling), None for all
    log_every: int = 50  # log a line every this many steps (0: only the end)
    save_every: int = 100  # write the resumable state (OUT.train-state.pt) every this many steps (0: only on SIGTERM)
    resume: bool = False  # continue an interrupted run from OUT.train-state.pt (none: start from step 0)
    overwrite: bool = False  # replace a finished OUT (and drop an interrupted run's state)

    def __post_init__(self) -> None:
        if isinstance(self.images, (str, os.PathLike)):
            self.images = (self.images,)
        if isinstance(self.data, (str, os.PathLike)):
            self.data = (self.data,)
        self.images = tuple(os.fspath(p) for p in self.images)
        self.data = tuple(os.fspath(p) for p in self.data)
        if not self.images and not self.data:
            raise ConfigError("no training images given: pass images (folders / globs) and/or data (JSONL files)")
        for name in ("steps", "batch_size", "image_size", "stats_images", "max_heldout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "log_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"max_images must be >= 1 or None, got {self.max_images}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize={self.resize!r}; choose one of {', '.join(RESIZE_MODES)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        for name in ("kl_weight", "mse_weight", "ssim_weight", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.init is None:
            check_layout(self.vae, self.latent_patch_size)
            check_sizes(self, self.vae.downsample)

    def setting_warnings(self) -> list[str]:
        """One line per setting that is legal but almost certainly not what was meant."""
        if self.steps and self.warmup_steps >= self.steps:
            return [
                f"warmup_steps {self.warmup_steps} >= steps {self.steps}: the learning rate never reaches lr "
                f"{self.lr:g}; use e.g. --warmup-steps {self.steps // 10}"
            ]
        return []

    @property
    def report_path(self) -> Path:
        """Where the JSON report is written."""
        return Path(self.report) if self.report else Path(self.out).with_suffix(".json")


def check_sizes(cfg: AutoencoderTrainConfig, downsample: int) -> None:
    """ConfigError unless image_size and crop_size are multiples of ``downsample`` and crop fits in image."""
    for name in ("image_size", "crop_size"):
        value = getattr(cfg, name)
        if value is not None and value % downsample:
            raise ConfigError(
                f"{name}={value} is not a multiple of the VAE downsample ({downsample}); "
                f"use e.g. {max(1, round(value / downsample)) * downsample}"
            )
    if cfg.crop_size is not None and not 0 < cfg.crop_size <= cfg.image_size:
        raise ConfigError(f"crop_size={cfg.crop_size} must be in [{downsample}, image_size={cfg.image_size}]")


def check_layout(cfg: VAEConfig, latent_patch_size: int = 2) -> None:
    """ConfigError unless downsample x latent_patch_size is the unified model's VAE stride (16)."""
    if VAE_IMAGE_STRIDE % latent_patch_size or latent_patch_size < 1:
        raise ConfigError(f"latent_patch_size={latent_patch_size} must divide the VAE image stride {VAE_IMAGE_STRIDE}")
    needed = VAE_IMAGE_STRIDE // latent_patch_size
    if cfg.downsample != needed:
        levels = needed.bit_length()
        raise ConfigError(
            f"ch_mult={','.join(map(str, cfg.ch_mult))} has {len(cfg.ch_mult)} levels, i.e. {cfg.downsample}x "
            f"downsampling; with latent_patch_size {latent_patch_size} the unified model needs {needed}x "
            f"(VAE stride {VAE_IMAGE_STRIDE}): give {levels} levels, e.g. {','.join(['1'] * levels)}"
        )
    if cfg.num_res_blocks < 1:
        raise ConfigError(f"num_res_blocks must be >= 1, got {cfg.num_res_blocks}")
