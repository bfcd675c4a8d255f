"""The pixel limit every image reader applies before decoding: decompression bombs and huge images.

A 389 KB PNG can declare 20000 x 20000 pixels; decoding it takes 1.2 GB as uint8 and several GB as
the float arrays our windowing works on. Every reader (:mod:`unimedvl.imaging.medical_io`, the
benchmark image extractor, the app and the HTTP API through them) reads the width and height from
the file's header first and refuses an image over ``max_image_pixels`` as a DataError that names
the file and the flag that raises the limit.

PIL has a guard of its own (``PIL.Image.MAX_IMAGE_PIXELS``: a warning above 89 MP, an exception
above 179 MP), process-wide and fixed. Our limit replaces it while one of our readers opens and
decodes a file (:func:`pil_guard_replaced`), so that ``max_image_pixels`` can be raised above
PIL's number and an image within our limit decodes without PIL's warning; outside our readers PIL's
guard stays as the user configured it.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator
from typing import IO

from unimedvl.errors import DataError

DEFAULT_MAX_IMAGE_PIXELS = 16384 * 16384  # 268,435,456: the library's default, stated in every flag's help
DEFAULT_LIMIT_TEXT = "16384 x 16384 = 268,435,456"

_lock = threading.Lock()
_users = 0  # our readers running now; PIL's guard is restored when the last one ends
_saved: int | None = None


@contextlib.contextmanager
def pil_guard_replaced() -> Iterator[None]:
    """Switch PIL's own decompression-bomb guard off while the block runs (our check replaces it).

    Reference counted, so concurrent readers (the app and the API decode uploads in threads) keep it
    off until the last one finishes. Callers must check :func:`check_pixels` before decoding.
    """
    global _users, _saved
    from PIL import Image

    with _lock:
        if _users == 0:
            _saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _users += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                Image.MAX_IMAGE_PIXELS = _saved


def check_limit(max_image_pixels: int | None) -> int:
    """The limit to apply: ``None`` means the default; anything but a positive integer is a mistake."""
    if max_image_pixels is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise DataError(
            f"max_image_pixels={max_image_pixels!r} must be a positive number of pixels (default {DEFAULT_LIMIT_TEXT})"
        )
    return max_image_pixels


def check_pixels(where: str, width: int, height: int, max_image_pixels: int | None) -> None:
    """DataError when a ``width x height`` image is over the limit (read from its header, not decoded)."""
    limit = check_limit(max_image_pixels)
    pixels = int(width) * int(height)
    if pixels > limit:
        which = (
            f"the default limit of {DEFAULT_LIMIT_TEXT} pixels"
            if limit == DEFAULT_MAX_IMAGE_PIXELS
            else f"the limit of {limit:,} pixels"
        )
        raise DataError(
            f"{where}: image is {width}x{height} = {pixels:,} pixels, over {which}; downscale it, or raise "
            "the limit with --max-image-pixels N (max_image_pixels= in the Python API)"
        )


def open_raster(source: str | IO[bytes], where: str, max_image_pixels: int | None, frame: int = 0):
    """``PIL.Image.open`` (lazy: header only) with our pixel check instead of PIL's guard.

    Returns the opened image (at ``frame``); the caller decodes it inside :func:`pil_guard_replaced`
    too (PIL checks TIFF tiles again when loading). DataError when it is no image or too large.
    """
    from PIL import Image, UnidentifiedImageError

    with pil_guard_replaced():
        try:
            image = Image.open(source)
        except UnidentifiedImageError:
            raise DataError(f"{where}: not an image file PIL can read (PNG, JPEG, TIFF, ...)") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{where}: unreadable image ({err})") from None
        try:
            frames = int(getattr(image, "n_frames", 1))
            if frame >= frames:
                raise DataError(f"{where}: frame={frame} but the file has {frames} frame(s)/page(s) (count from 0)")
            if frame:
                image.seek(frame)
            check_pixels(where, image.width, image.height, max_image_pixels)
        except DataError:
            image.close()
            raise
        except (OSError, EOFError, SyntaxError, ValueError) as err:  # a broken page index
            image.close()
            raise DataError(f"{where}: unreadable image ({err})") from None
    return image


def raster_size(data: bytes, max_image_pixels: int | None) -> tuple[str | None, tuple[int, int]]:
    """(PIL format, (width, height)) of encoded image bytes, checked against the limit, then verified
    (the structure, e.g. PNG chunks, without decoding every pixel). DataError when they are no image."""
    from PIL import Image, UnidentifiedImageError

    with pil_guard_replaced():
        try:
            with Image.open(io.BytesIO(data)) as image:
                check_pixels(f"the image bytes ({len(data)} bytes)", image.width, image.height, max_image_pixels)
                image.verify()
                return image.format, image.size
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DataError(
                f"the image bytes are not an image PIL can read ({len(data)} bytes starting "
                f"{data[:8].hex()}; {type(err).__name__})"
            ) from None
