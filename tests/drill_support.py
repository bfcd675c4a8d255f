"""Hostile inputs for the fault and bad-input drills: decompression bombs, huge texts, a full disk.

``png_bomb`` writes a valid greyscale PNG of any declared size without ever holding its pixels:
the rows of zeros are compressed as they are produced (20000 x 20000 gives a 389 KB file that
decodes to 400 MB). ``small_filesystem`` mounts a tmpfs of a few MB (root only; the test is
skipped with the reason otherwise) for disk-full drills on a real filesystem.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A greyscale 8-bit PNG declaring ``width x height``; ``rows`` limits the pixel data actually
    written (None: all of it, a valid image; fewer: a header-only bomb that is quick to make)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one zero byte per pixel
    parts = [compressor.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    )
    return path


def huge_text(megabytes: float) -> str:
    """A question of ``megabytes`` MB of ordinary words (what a pasted document looks like)."""
    words = "the patient presents with a small nodule in the left lower lobe and no effusion "
    return (words * int(megabytes * 1_000_000 / len(words) + 1))[: int(megabytes * 1_000_000)]


@contextlib.contextmanager
def small_filesystem(path: Path, size_kb: int):
    """A tmpfs of ``size_kb`` KB mounted at ``path`` for the block (skips the test without root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a disk-full drill on a real filesystem needs root to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem holding ``path`` until at most ``leave_bytes`` are free (a ballast file)."""
    ballast = path / "ballast"
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with ballast.open("wb") as handle:
        try:
            handle.write(b"\x00" * max(0, free - leave_bytes))
        except OSError:
            pass
    return ballast
