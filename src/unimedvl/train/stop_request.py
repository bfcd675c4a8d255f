"""SIGTERM as a request to stop cleanly: finish the step, save a resumable checkpoint, exit.

Schedulers (SLURM, Kubernetes, torchrun's agent) send SIGTERM and, after a grace period (SLURM's
KillWait, Kubernetes' terminationGracePeriodSeconds, torchrun's 30 s), SIGKILL. While a run holds a
``StopRequest``:

* the first SIGTERM only sets a flag and says so on stderr; the training loop asks ``should_stop``
  after each step, saves and returns;
* a second SIGTERM, or a SIGINT (Ctrl-C) after the first SIGTERM, ends the process at once, by that
  signal's default action (nothing more is saved; the last complete checkpoint stays);
* under torchrun every rank must agree, or one rank would wait forever in the save's collectives
  for another that went on training: ``should_stop(info)`` all-reduces the flag (MAX), so a signal
  that reached any rank stops all of them after the same step.

Outside the main thread (signals cannot be installed there) the request is inert.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

EXIT_STATUS = 128 + signal.SIGTERM  # what a process ended by SIGTERM reports: schedulers read it as "terminated"


class StopRequest:
    """Install with ``with StopRequest("train") as stop:``; ask ``stop.should_stop(info)`` after each step."""

    def __init__(self, what: str = "the run"):
        self.what = what
        self.requested = False
        self._previous: dict[int, Any] = {}

    # -- signal handling ---------------------------------------------------------------------

    def install(self) -> StopRequest:
        """Catch SIGTERM (main thread only) so a stop request ends the run after a checkpoint."""
        if threading.current_thread() is threading.main_thread() and not self._previous:
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the signal handlers that were there before."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame) -> None:
        if self.requested:  # the second request: end now, as the signal's default action would
            self.uninstall()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.requested = True
        self._previous.setdefault(signal.SIGINT, signal.signal(signal.SIGINT, self._handle))
        sys.stderr.write(
            f"{signal.Signals(signum).name} received: {self.what} finishes its current step, saves a "
            "resumable checkpoint and exits (send SIGTERM again or press Ctrl-C to stop at once)\n"
        )
        sys.stderr.flush()

    def report(self, step: int, total_steps: int, checkpoint_dir, auto_resume: bool) -> bool:
        """After the loop: True (and the line saying where the run stands) when a SIGTERM ended it early."""
        if not (self.requested and step < total_steps):
            return False
        logging.getLogger("unimedvl.train").warning(stop_message(checkpoint_dir, step, total_steps, auto_resume))
        return True

    # -- the decision ------------------------------------------------------------------------

    def should_stop(self, info=None) -> bool:
        """True when a stop was requested here or (under torchrun) on any other rank; all ranks must call it."""
        if info is None or not getattr(info, "distributed", False):
            return self.requested
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.requested else 0.0], device=info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.requested = bool(flag.item() > 0)
        return self.requested


def stop_message(checkpoint_dir, step: int, total_steps: int, auto_resume: bool) -> str:
    """The line a run stopped by SIGTERM ends with."""
    from unimedvl.train.checkpointing import step_dir_name

    return (
        f"stopped by SIGTERM after step {step} of {total_steps}: {step_dir_name(step)} in {checkpoint_dir} is "
        f"saved; rerun the same command{'' if auto_resume else ' with --auto_resume True'} to continue"
    )
