"""Where this process sits in a torchrun job, and the one way to start its process group.

Shared by the trainer and batch evaluation. The environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE) is read here and nowhere else.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from unimedvl.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Rank, world and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: int) -> int:
    """An integer environment variable; a malformed value is a ConfigError naming it."""
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def dist_env() -> DistInfo:
    """Rank and world from the torchrun environment (single process when unset); device not chosen."""
    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", rank if world > 1 else 0)
    local_world = env_int("LOCAL_WORLD_SIZE", world)
    return DistInfo(rank, world, local_rank, local_world)


def start_distributed(device: str | None = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Choose the device and, under torchrun with WORLD_SIZE > 1, start the process group.

    ``device``: ``auto`` / None (CUDA when visible), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun a
    CUDA rank takes ``cuda:LOCAL_RANK``. gloo on CPU, nccl on CUDA; one process starts no group.
    ``UNIMEDVL_DIST_TIMEOUT_MIN`` overrides ``timeout_minutes`` (how long a collective waits).
    """
    import torch.distributed as dist

    env = dist_env()
    name = "auto" if device in (None, "auto") else str(device)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is visible; use --device cpu (or auto)")
    use_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if use_cuda and (env.world_size > 1 or ":" not in name):
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device(name if use_cuda else "cpu")
    if env.world_size > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(minutes=env_int("UNIMEDVL_DIST_TIMEOUT_MIN", timeout_minutes))
        kwargs = {"device_id": dev} if use_cuda else {}
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout, **kwargs)
    return DistInfo(env.rank, env.world_size, env.local_rank, env.local_world_size, dev)


def stop_distributed() -> None:
    """Destroy the process group if one is running."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
