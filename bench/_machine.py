"""One line describing where a benchmark ran (printed by every bench script, copied to BENCHMARKS.md)."""

import os
import platform
import subprocess

import torch


def machine() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), commit {commit or 'uncommitted'}{' (+ working tree)' if dirty else ''}"
    )
