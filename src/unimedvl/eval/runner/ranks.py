"""The evaluation processes: this one's rank, the world size and device; the process group under torchrun.

Under torchrun (RANK / WORLD_SIZE) each rank loads the model and takes every W-th of the samples
still to do (gloo on CPU, nccl on GPU). The process group's timeout bounds how long rank 0 waits
at the end for the slowest rank: a day by default (UNIMEDVL_DIST_TIMEOUT_MIN).
"""

from __future__ import annotations


class Ranks:
    """Rank, world and device of this evaluation process; the process group under torchrun."""

    def __init__(self, device: str | None):
        import torch.distributed as dist

        from unimedvl.distributed import start_distributed

        self.started = not dist.is_initialized()
        # Rank 0 merges at the end and may wait long for the slowest rank: a day by default.
        info = start_distributed(device, timeout_minutes=24 * 60)
        self.started = self.started and dist.is_initialized()
        self.rank, self.world = info.rank, info.world_size
        self.cuda = info.device.type == "cuda"
        self.device = str(info.device)

    def share(self, pending: list) -> list:
        """This rank's share of ``pending``: every W-th item, starting at its rank (file order)."""
        return pending[self.rank :: self.world]

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in one process)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """End the process group, when this object started it."""
        if self.started:
            from unimedvl.distributed import stop_distributed

            stop_distributed()
