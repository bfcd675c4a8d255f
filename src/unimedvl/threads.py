"""CPU threads on a shared machine: how many, and how idle threads wait.

Torch's defaults assume the machine is ours: one OpenMP thread per core, and threads that
spin-wait for work between parallel regions. Two such processes on the same cores spin against
each other (each burns its slice waiting for a thread the other has preempted), which made the
quick demo about 25x slower at load 8-15 instead of about 3x (issue 29). So every heavy command
(demo, train, train-autoencoder, eval, serve, api, ask, edit, generate, chat):

* waits passively: ``OMP_WAIT_POLICY=PASSIVE`` (GNU OpenMP, what torch's Linux wheels use) and
  ``KMP_BLOCKTIME=0`` (Intel OpenMP). The OpenMP runtime reads them once, when it starts, so
  :func:`prepare` runs at the top of the CLI, before torch is imported; DataLoader workers and
  other child processes inherit them. A value the user set is kept.
* uses the cores this process may run on (``os.sched_getaffinity``: a container's or ``taskset``'s
  share, not the host's count) less the load other programs put on them (the 1-minute load
  average), at least 1: :func:`choose_threads`. ``--threads N`` (or ``OMP_NUM_THREADS``) decides
  instead.

``bench/contention.py`` measures the effect (copies of the quick demo's training at once, beside a
matmul loop, as a ratio to one alone).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
THREADS_ENV = "OMP_NUM_THREADS"
# Commands that compute for long enough to care (they get --threads).
HEAVY_COMMANDS = ("demo", "train", "train-autoencoder", "eval", "serve", "api", "ask", "edit", "generate", "chat")
THREADS_HELP = (
    "CPU threads for torch (default: $OMP_NUM_THREADS, else the cores this process may use less the "
    "load of other programs, at least 1); idle threads wait passively, so jobs sharing the cores do "
    "not spin against each other"
)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """Runnable tasks over the last minute (0 where the OS does not say)."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads(requested: int | None = None, cores: int | None = None, load: float | None = None) -> int:
    """``requested``, else $OMP_NUM_THREADS, else the free cores: affinity cores less the load, rounded, >= 1."""
    if requested is not None:
        if requested < 1:
            from unimedvl.errors import UserError

            raise UserError(f"--threads {requested}: give at least 1 thread")
        return requested
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores() if cores is None else cores
    load = load_average() if load is None else load
    return max(1, min(cores, int(cores - load + 0.5)))


def requested_threads(argv: Sequence[str]) -> int | None:
    """The value of ``--threads N`` / ``--threads=N`` in a command line (None when absent or not a number)."""
    for i, arg in enumerate(argv):
        value = (
            arg.partition("=")[2]
            if arg.startswith("--threads=")
            else (argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        )
        if value is not None:
            return int(value) if value.strip().lstrip("-").isdigit() else None
    return None


def prepare(requested: int | None = None) -> int:
    """Set the passive wait policy and the thread count in the environment (before torch starts its OpenMP
    runtime), and in torch when it is already imported; returns the thread count."""
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)
    threads = choose_threads(requested)
    if "torch" not in sys.modules:
        os.environ[THREADS_ENV] = str(threads)  # read when torch starts; inherited by workers and children
    elif requested is not None:  # torch already runs (in-process calls, the API): only an explicit choice
        import torch

        torch.set_num_threads(threads)
    return threads


def add_threads_argument(parser) -> None:
    """``--threads N`` (read by the CLI before torch loads: :func:`requested_threads`)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)
