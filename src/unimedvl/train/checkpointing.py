"""Training checkpoints: release-layout weights plus resumable training state, written atomically.

One directory per save, ``checkpoint_dir/step_0000100/``:

- the release layout (``unimedvl.checkpoint.release.save_model``): ``ema.safetensors`` (EMA weights),
  ``model.safetensors`` (raw weights), ``ae.safetensors``, configs, tokenizer; ``load_model``
  reads it directly (LoRA adapters are merged into the weights here);
- ``train_state/``: torch.distributed.checkpoint (DCP) of the trainable weights, their EMA and
  the optimizer, sharded as in training (DCP can reload it on another world size);
- ``rank_00000.json`` ...: per rank, the data-loader state and the RNG states (JSON, no pickles);
- ``checkpoint.json``: step, scheduler state, world size; written last.

Everything is written under ``.tmp-step_0000100`` and renamed when complete, so a crash never
leaves a directory that looks finished; ``auto_resume`` takes the newest ``step_*`` holding
``checkpoint.json`` and ``train_state/.metadata`` and skips (with a warning) anything else. The
trainer deletes leftover ``.tmp-*`` folders at startup (:func:`remove_partial_saves`), and a save
that fails on a full disk deletes its own before it reports.

Trust: DCP stores its ``.metadata`` with pickle (torch's format); tensors are read with
``weights_only``. Resume only from checkpoint directories you wrote; share models through the
release layout (safetensors only).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from unimedvl.errors import CheckpointError
from unimedvl.fileio import atomic_write_text, is_disk_full, remove_stale_temporaries

log = logging.getLogger("unimedvl.train")

STEP_RE = re.compile(r"^step_(\d+)$")
MANIFEST = "checkpoint.json"
STATE_DIR = "train_state"


def step_dir_name(step: int) -> str:
    """The folder name of step ``step``'s checkpoint (zero-padded, so names sort by step)."""
    return f"step_{step:07d}"


def rank_file(rank: int) -> str:
    """The file name of one rank's data and RNG state inside a checkpoint."""
    return f"rank_{rank:05d}.json"


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a finished checkpoint (a killed save leaves no manifest)."""
    return (path / MANIFEST).is_file() and (path / STATE_DIR / ".metadata").is_file()


def list_checkpoints(root: str | Path, warn: bool = True) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first; incomplete ones are warned about."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = STEP_RE.match(child.name)
        if not m or not child.is_dir():
            continue
        if is_complete(child):
            found.append((int(m.group(1)), child))
        elif warn:
            log.warning("skipping incomplete checkpoint %s (no %s or %s/.metadata)", child, MANIFEST, STATE_DIR)
    return sorted(found)


def remove_partial_saves(root: str | Path) -> list[Path]:
    """Delete the ``.tmp-step_*`` folders (and ``*.tmp`` files) of saves that never finished; returns them."""
    return remove_stale_temporaries(root, (".tmp-*", "*.tmp"))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, the one a resume starts from (None if none)."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def prune_checkpoints(root: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete the complete checkpoints that are neither among the newest ``keep_last`` (0 keeps all) nor
    at a step that is a multiple of ``keep_every`` (0: none; kept for curves over training); returns
    what was removed."""
    if keep_last <= 0:
        return []
    found = list_checkpoints(root, warn=False)
    removed = []
    for step, path in found[:-keep_last]:
        if keep_every > 0 and step % keep_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------
# RNG and data state (per rank, JSON).


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU, CUDA), NumPy and Python RNG states as JSON, so a resume draws the same numbers."""

    def pack(t: Tensor) -> str:
        return base64.b64encode(t.cpu().numpy().tobytes()).decode()

    np_state = np.random.get_state()
    state = {
        "torch": pack(torch.get_rng_state()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _jsonable(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [pack(s) for s in torch.cuda.get_rng_state_all()]
    return state


def _jsonable(x):
    return [_jsonable(v) for v in x] if isinstance(x, (list, tuple)) else x


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states ``rng_state`` saved."""

    def unpack(s: str) -> Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    torch.set_rng_state(unpack(state["torch"]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([unpack(s) for s in state["cuda"]])


def write_rank_state(path: Path, rank: int, data_state: Any) -> None:
    """Save one rank's data-loader position and RNG state into checkpoint ``path``."""
    payload = {"rank": rank, "data": data_state, "rng": rng_state()}
    atomic_write_text(path / rank_file(rank), json.dumps(payload), fsync=False)  # the folder is renamed whole


def read_rank_state(path: Path, rank: int) -> dict | None:
    """One rank's saved data-loader and RNG state (None when the checkpoint has none for it)."""
    file = path / rank_file(rank)
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: invalid JSON ({err.msg} at line {err.lineno})") from None


def read_manifest(path: Path) -> dict:
    """The checkpoint's manifest (step, scheduler, config), which says what the checkpoint holds."""
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / MANIFEST}: cannot be read ({err})") from None


# ---------------------------------------------------------------------------------------------
# Training state (DCP).


def train_state(model: nn.Module, optimizer, ema_state: Mapping[str, Tensor] | None, with_optimizer: bool = True):
    """The DCP state dict: trainable weights, EMA shadow and (optionally) the optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict

    options = StateDictOptions(ignore_frozen_params=True)
    if with_optimizer:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
        state = {"model": model_sd, "optim": optim_sd}
    else:
        state = {"model": get_model_state_dict(model, options=options)}
    if ema_state is not None:
        state["ema"] = dict(ema_state)
    return state


def save_train_state(path: Path, model: nn.Module, optimizer, ema_state) -> None:
    """Save model, optimizer and EMA as a distributed checkpoint (resharded on load)."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # one process: DCP warns that it saves without a process group
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(train_state(model, optimizer, ema_state), checkpoint_id=str(path / STATE_DIR))


def load_train_state(path: Path, model: nn.Module, optimizer, ema_state, with_optimizer: bool) -> None:
    """Restore trainable weights, EMA (in place) and optionally the optimizer from ``path/train_state``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    state = train_state(model, optimizer, ema_state, with_optimizer)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path / STATE_DIR))
    except Exception as err:  # DCP raises several exception types for missing/mismatched entries
        raise CheckpointError(
            f"{path / STATE_DIR}: cannot restore the training state ({type(err).__name__}: {str(err)[:300]}). "
            "It was written by a run with other trainable parameters (freeze flags, LoRA, visual_gen/und); "
            "use --resume_model_only True to take only its weights"
        ) from None
    options = StateDictOptions(ignore_frozen_params=True, strict=False)
    if with_optimizer:
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"], options=options
        )
    else:
        set_model_state_dict(model, state["model"], options=options)


def finalize(tmp: Path, final: Path, manifest: dict) -> None:
    """Write the manifest into ``tmp`` and rename it to ``final`` (replacing an older copy)."""
    (tmp / MANIFEST).write_text(json.dumps({**manifest, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


# ---------------------------------------------------------------------------------------------
# Failures while saving (a full disk above all), agreed across ranks.


class SaveFailed(Exception):
    """A save phase failed on some rank: this rank's own error (if any) and whether a disk was full."""

    def __init__(self, error: BaseException | None, disk_full: bool):
        super().__init__(str(error))
        self.error, self.disk_full = error, disk_full


def on_all_ranks(action: Callable[[], None], info, folder: Path, main_only: bool = False) -> None:
    """Run ``action`` (on rank 0 only with ``main_only``), then agree: SaveFailed on every rank if it
    failed on any (no rank waits forever at the next collective), with ``disk_full`` when a rank ran out
    of space in ``folder``. ``info``: the DistInfo of this process."""
    from unimedvl.train.parallel import all_reduce_sum

    error = None
    if info.is_main or not main_only:
        try:
            action()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: BLE001 - DCP's CheckpointException is a BaseException
            error = err
    full = error is not None and is_disk_full(error, folder)
    flags = all_reduce_sum(torch.tensor([float(full), float(error is not None)], dtype=torch.float64), info).cpu()
    if flags[1] > 0:
        raise SaveFailed(error, disk_full=bool(flags[0] > 0))


def disk_full_message(root: Path, step: int, auto_resume: bool) -> str:
    """The one line a save that found the disk full ends the run with: what failed, what is intact, what to do."""
    intact = latest_checkpoint(root)
    if intact is None:
        kept = "no earlier checkpoint exists, so the rerun starts from step 0"
    else:
        kept = f"step {int(read_manifest(intact)['step'])} is intact ({intact.name})"
    return f"disk full while saving step {step} in {root}; {kept}; free space and rerun" + (
        "" if auto_resume else " with --auto_resume True"
    )
