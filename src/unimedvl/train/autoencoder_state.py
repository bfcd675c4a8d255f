"""``train-autoencoder``'s resumable state: what a kill or a SIGTERM may leave, and what a rerun may replace.

Every ``save_every`` steps, and when a SIGTERM asks the run to stop (``stop_request.py``), the whole
training state goes to ``OUT.train-state.pt`` beside the weights (written atomically): weights,
AdamW moments, the random generator, the epoch order of the crops, the logged history and the
PSNR measured before training. ``--resume`` continues from it and ends with the weights of an
uninterrupted run, bit for bit (same thread count); the finished run deletes it.

What a rerun may do to an output (``check_output``, before any image is read):

* ``OUT`` exists (a finished autoencoder): refused unless ``--overwrite``;
* ``OUT.train-state.pt`` exists (an interrupted run): refused unless ``--resume`` (continue) or
  ``--overwrite`` (start over);
* ``--resume`` with no state starts from step 0 (so a requeued job can always pass it).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from unimedvl.errors import CheckpointError, ConfigError
from unimedvl.fileio import atomic_path

STATE_FORMAT = "unimedvl-autoencoder-state/1"
# Settings that may change between a run and its resume; any other difference is refused.
MAY_CHANGE = ("resume", "overwrite", "save_every", "log_every")


def state_path(out: str | os.PathLike) -> Path:
    """Where a run writing ``out`` keeps its resumable training state (beside the output)."""
    out = Path(out)
    return out.with_name(out.name + ".train-state.pt")


def check_output(cfg) -> Path | None:
    """Refuse to replace a finished or interrupted run by accident; the state to resume from, if any."""
    out, state = Path(cfg.out), state_path(cfg.out)
    if cfg.overwrite:
        state.unlink(missing_ok=True)
        return None
    if out.exists() and not state.exists():
        raise ConfigError(
            f"{out} exists (a finished autoencoder); pass --overwrite to replace it or choose another --out"
        )
    if state.exists():
        if not cfg.resume:
            raise ConfigError(
                f"{state} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
            )
        return state
    return None


def _comparable(cfg) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if k not in MAY_CHANGE}


def save_state(
    path: Path, cfg, step: int, model, optimizer, gen: torch.Generator, order: list[int], extra: dict[str, Any]
) -> None:
    """The whole training state after ``step`` steps, atomically."""
    state = {
        "format": STATE_FORMAT,
        "step": step,
        "config": _comparable(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(),
        "order": list(order),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, cfg) -> dict[str, Any]:
    """The saved state; CheckpointError when it is unreadable or was written with other settings."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a torn or foreign file
        raise CheckpointError(
            f"{path}: not a readable train state ({type(err).__name__}); delete it or pass --overwrite to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a train-autoencoder state; delete it or pass --overwrite")
    now = _comparable(cfg)
    saved = state.get("config", {})
    diffs = [k for k in now if _normal(saved.get(k)) != _normal(now[k])]
    if diffs:
        shown = ", ".join(diffs[:6]) + (f" and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ConfigError(
            f"{path} was written with other settings ({shown}); rerun with the same settings to "
            "resume, or pass --overwrite to start over"
        )
    return state


def _normal(value: Any) -> Any:
    """Tuples and lists compare equal (a state round-trips tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value
