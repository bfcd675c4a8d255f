"""Image files as stored (no windowing, no RGB conversion), under the same pixel limit as the loader.

:func:`~unimedvl.imaging.medical_io.load_image` gives the model's view: 8-bit RGB through a window.
Some callers need the file's own values instead: the paired image metrics compare the stored grey
levels (a 16-bit PNG's ``I;16`` values in native mode), and the report embeds our own PNGs as they
were written. They read through here, so no image in the project is decoded past the pixel limit
(:mod:`unimedvl.imaging.pixel_limit`): the size comes from the header, before any pixel is decoded.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from unimedvl.errors import DataError
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS, check_pixels, open_raster, pil_guard_replaced


def read_raster(path: str | os.PathLike[str], max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """A PNG / JPEG / TIFF / ... file decoded in its stored mode (``L``, ``I;16``, ``RGBA``, ``P`` ...),
    first frame; DataError when it is no image, is truncated or is over ``max_image_pixels``."""
    where = os.fspath(path)
    with pil_guard_replaced(), open_raster(where, where, max_image_pixels) as image:
        try:
            image.load()
        except OSError as err:
            raise DataError(f"{where}: unreadable or truncated image ({err})") from None
        return image  # loaded: usable after the file is closed


def read_array(path: str | os.PathLike[str], max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A ``.npy`` array as stored (its dtype and shape), checked from its header: an array of two or
    more dimensions counts its first two as height and width."""
    where = os.fspath(path)
    try:
        mapped = np.load(where, mmap_mode="r", allow_pickle=False)  # only the header is read here
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{where}: unreadable .npy ({type(err).__name__}: {err})") from None
    if mapped.ndim >= 2:
        check_pixels(where, mapped.shape[1], mapped.shape[0], max_image_pixels)
    return np.array(mapped)


def read_stored(
    path: str | os.PathLike[str], max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image | np.ndarray:
    """A ``.npy`` file as its array (:func:`read_array`), any other file as a raster image (:func:`read_raster`)."""
    if os.fspath(path).lower().endswith(".npy"):
        return read_array(path, max_image_pixels)
    return read_raster(path, max_image_pixels)
