"""Image bytes from parquet cells and base64 TSV cells: checked, and extracted once into a folder.

Our image loader reads files, so encoded bytes are written to ``<folder>/<sha256[:20]>.<ext>``:
the name depends on the bytes alone, which makes extraction deterministic (the same benchmark
gives the same records, so a resumed evaluation matches its run), idempotent (a file already
there is the same image, and is not written again) and shared (the 451 VQA-RAD test questions
use 203 images; each is stored once). Files are written atomically, so a killed conversion never
leaves a half image under a final name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from unimedvl.errors import DataError
from unimedvl.fileio import atomic_path
from unimedvl.imaging.formats import PIL_FORMAT_SUFFIX
from unimedvl.imaging.medical_io import image_size
from unimedvl.imaging.pixel_limit import raster_size


def image_format(data: bytes) -> tuple[str, tuple[int, int]]:
    """(file extension, (width, height)) of encoded image bytes; DataError when they are no image or
    declare more pixels than the default limit (a decompression bomb inside a parquet or TSV cell)."""
    fmt, size = raster_size(data, None)
    return PIL_FORMAT_SUFFIX.get(fmt or "", f".{(fmt or 'img').lower()}"), size


class ImageStore:
    """Where extracted images go (``folder``), or, with ``folder=None``, a checker that writes nothing."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.written = 0  # files written by this store (the others were already there)
        self.reused = 0

    def put(self, data: bytes) -> str:
        """The path of the file holding ``data`` (written unless present); DataError when not an image."""
        ext, _ = image_format(data)
        name = hashlib.sha256(data).hexdigest()[:20] + ext
        if self.folder is None:
            return name
        path = self.folder / name
        if path.is_file() and path.stat().st_size == len(data):
            self.reused += 1
            return str(path)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, fsync=False) as tmp:
            tmp.write_bytes(data)
        self.written += 1
        return str(path)


def check_file(path: str, headers: bool) -> str | None:
    """Why an image file cannot be used, or None: missing; with ``headers``, an unreadable header too."""
    if not Path(path).is_file():
        return f"image {path} not found"
    if headers:
        try:
            image_size(path)
        except DataError as err:
            return str(err)
    return None
