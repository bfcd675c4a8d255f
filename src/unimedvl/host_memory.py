"""Host memory that a freed tensor gives back: glibc's mmap threshold for large blocks.

glibc serves an allocation above its mmap threshold with its own mapping, returned to the OS on
free. The threshold starts at 128 KiB but rises to the size of every mapped block freed, up to
32 MiB, and the trim threshold (how much free memory the top of a heap may keep) rises to twice
that, so a training step's activations (tens of MiB each at the release's widths) come from the
heaps instead, where freed blocks stay resident and fragmentation keeps the next one from reusing
them whole. Measured with ``bench/train_memory.py`` (QLoRA int8, release widths, 2 layers, packs
of ~2000 tokens, fp32 on a CPU): the steps' peak resident set is 10.9 GB with glibc's rising
thresholds, 11.5 GB with only the mmap threshold fixed (2.5 GB of freed memory still resident after
the step) and 9.9 GB with both fixed (1.2 GB; the planner says 9.6 GB); single runs of one setting
differ by up to 1.5 GB with where blocks land (BENCHMARKS.md, "Training memory plans"). Fixed
thresholds keep activation-sized blocks out of the heaps, so the resident set follows more closely
what the tensors hold, which is what the training memory planner counts.

:func:`keep_large_blocks_mapped` fixes both (``mallopt``, which also stops the rising) for the
training process. A value the user gave (``MALLOC_MMAP_THRESHOLD_``) is kept; on a
C library other than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers in glibc's malloc.h
M_MMAP_THRESHOLD = -3
LARGE_BLOCK_BYTES = 4 * 1024 * 1024  # blocks from 4 MiB up get their own mapping (activations, not small tensors)
TRIM_BYTES = 128 * 1024  # glibc's initial trim threshold: free heap tops above it go back to the OS
ENV = "MALLOC_MMAP_THRESHOLD_"


def keep_large_blocks_mapped(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Serve blocks of ``threshold`` bytes and more from their own mappings from now on; True when set.

    False (and nothing changed) where the C library is not glibc or the user set ``MALLOC_MMAP_THRESHOLD_``.
    """
    if os.environ.get(ENV):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return False
    # glibc only (it has gnu_get_libc_version): musl's mallopt accepts the call and ignores it.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    # The rising rule also raised the trim threshold (to twice the mmap threshold) for every block freed
    # before this call; put it back to where it starts, as the environment variable would have kept it.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold))) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
