"""The trainer's fixed mmap threshold: set on glibc, never over a value the user chose."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from unimedvl import host_memory

_LIBC = ctypes.util.find_library("c")
GLIBC = bool(_LIBC) and hasattr(ctypes.CDLL(_LIBC), "gnu_get_libc_version")

HEAP_GROWTH = """
import sys, torch
from unimedvl.host_memory import keep_large_blocks_mapped
def heap():
    for line in open('/proc/self/maps'):
        if line.rstrip().endswith('[heap]'):
            start, end = line.split()[0].split('-')
            return int(end, 16) - int(start, 16)
    return 0
if sys.argv[-1] == 'fixed':
    assert keep_large_blocks_mapped()
torch.ones(4 << 20).sum()  # a freed 16 MiB mapping: glibc's threshold rises to 16 MiB
before = heap()
blocks = [torch.ones(1 << 20) for _ in range(16)]  # 16 x 4 MiB, the size of an activation
print(heap() - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_activation_sized_blocks_get_their_own_mappings(monkeypatch):
    """Rising threshold: 4 MiB blocks come from the heap (where a freed one stays resident); fixed: mapped."""
    monkeypatch.delenv(host_memory.ENV, raising=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def growth(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", HEAP_GROWTH, mode], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert growth("rising") >= 48 * 2**20
    assert growth("fixed") < 4 * 2**20


def test_a_threshold_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "65536")
    assert host_memory.keep_large_blocks_mapped() is False
