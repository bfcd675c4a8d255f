"""Checks and choices the trainer makes before step 1: the loader factory, input files, and settings
that are legal but almost certainly not what was meant (one warning line each)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from unimedvl.errors import ConfigError
from unimedvl.train.config import TrainConfig

log = logging.getLogger("unimedvl.train")  # the trainer's logger: its warnings go to train.log

LoaderFactory = Callable[..., Any]


def resolve_loader_factory(spec: str) -> LoaderFactory:
    """Import the ``MODULE:FUNCTION`` data loader a run names (``build_loader`` by default)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "build_loader")
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"loader {spec!r} cannot be imported ({err}); give MODULE:FUNCTION") from None


def _check_file(path: str | None, flag: str) -> None:
    # Existence only: the loader parses and checks the mix (once), before the model is built.
    if path and not Path(path).is_file():
        raise ConfigError(f"--{flag} {path}: file not found")


CPU_TOKEN_BUDGET = 4096  # above this a packed batch takes minutes per step on a laptop CPU


def _warn_about_settings(cfg: TrainConfig, device: torch.device) -> None:
    """One warning line per setting that is legal but almost certainly not what was meant."""
    if cfg.warmup_steps >= cfg.total_steps:
        log.warning(
            "warmup_steps %d >= total_steps %d: the learning rate never reaches lr %g; use e.g. --warmup_steps %d",
            cfg.warmup_steps,
            cfg.total_steps,
            cfg.lr,
            max(0, cfg.total_steps // 10),
        )
    if device.type == "cpu" and cfg.expected_num_tokens > CPU_TOKEN_BUDGET:
        log.warning(
            "expected_num_tokens %d is a GPU budget: on a CPU each step takes minutes; use e.g. "
            "--expected_num_tokens 1024 --max_num_tokens 2048 --max_num_tokens_per_sample 2048 "
            "(README: fine-tuning on a CPU)",
            cfg.expected_num_tokens,
        )
    if cfg.keep_every and cfg.keep_every % cfg.save_every:
        log.warning(
            "keep_every %d is not a multiple of save_every %d: only saves at multiples of both are kept "
            "beyond keep_last; use a multiple of save_every, e.g. --keep_every %d",
            cfg.keep_every,
            cfg.save_every,
            cfg.save_every * max(1, round(cfg.keep_every / cfg.save_every)),
        )
