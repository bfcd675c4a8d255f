"""Where this process sits in a torchrun job, read from the environment in one place.

Shared by the trainer and batch evaluation (library code: no process group is started here).
"""

from __future__ import annotations

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
