"""Host memory that a freed tensor gives back: glibc's mmap threshold for large blocks.

glibc serves an allocation above its mmap threshold with its own mapping, returned to the OS on
free. The threshold starts at 128 KiB but rises to the size of every mapped block freed, up to
32 MiB, so after the first few frees a training step's activations (tens of MiB each at the
release's widths) come from the heap instead, where a freed block stays resident and
fragmentation keeps the next step from reusing it whole. Measured with ``bench/train_memory.py``
(QLoRA int8, release widths, 2 layers, 2048-token packs on a CPU): 10.89 GB peak resident with the
rising threshold, 10.18 GB with a fixed 4 MiB one, and 2.7 GB against 1.8 GB still resident after
the steps. A fixed threshold makes the resident set follow what the tensors hold, which is what
the training memory planner counts.

:func:`keep_large_blocks_mapped` fixes it (``mallopt(M_MMAP_THRESHOLD)``, which also stops the
rising) for the training process. A value the user gave (``MALLOC_MMAP_THRESHOLD_``) is kept; on a
C library other than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
LARGE_BLOCK_BYTES = 4 * 1024 * 1024  # blocks from 4 MiB up get their own mapping (activations, not small tensors)
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
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
