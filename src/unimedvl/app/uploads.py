"""Uploaded files: which ones the app reads, and how one becomes an image (window, slice, frame).

The app reads only files that gradio itself received (its upload folder) or that it wrote itself
(the example folder): a path typed or forged by a client is refused before anything opens it.
The extension must be one of :data:`~unimedvl.app.presets.ALLOWED_EXTENSIONS`, and the content is
checked by decoding it (a text file renamed ``.png`` fails there). Messages name the file by its
base name only, so server paths never reach the page.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from unimedvl.app.presets import ALLOWED_EXTENSIONS
from unimedvl.imaging.medical_io import LoadedImage, load_array
from unimedvl.errors import DataError

_FORMAT = {".dcm": "dicom", ".nii": "nifti", ".nii.gz": "nifti", ".npy": "npy"}
# An absolute path inside a message: a slash-separated run of at least two parts ("/srv/app/x.png").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"(),;:/]+)+/([^\s'\"(),;:/]+)")


def without_paths(message: str) -> str:
    """``message`` with every absolute path replaced by its last part: the page never shows where the
    server keeps files (upload folders, checkpoints, gradio's cache)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), message)


@dataclass(frozen=True)
class ViewOptions:
    """How a file is turned into a 2-D image (the controls under the upload box)."""

    window: str = "auto"  # preset name, mode (auto, file, minmax, percentile, full) or "C,W"
    axis: int = 2  # NIfTI: array axis cut
    slice: int | None = None  # NIfTI: index along axis; None: the middle
    t: int = 0  # NIfTI: volume of a 4-D series
    frame: int = 0  # DICOM: frame of a multi-frame file


def allowed_extension(name: str) -> str | None:
    """The accepted suffix ``name`` ends with (lower case), or None."""
    lower = name.lower()
    matches = [ext for ext in ALLOWED_EXTENSIONS if lower.endswith(ext) and len(lower) > len(ext)]
    return max(matches, key=len) if matches else None


def file_format(path: str | os.PathLike[str]) -> str:
    """dicom | nifti | npy | raster, from the (already checked) extension."""
    return _FORMAT.get(allowed_extension(Path(path).name) or "", "raster")


def check_upload(path: str | os.PathLike[str] | None, roots: Sequence[str | os.PathLike[str]]) -> Path:
    """The resolved path of an upload the app may read; DataError (a message for the page) otherwise."""
    if path is None or not str(path).strip():
        raise DataError("no image: upload a file (PNG, JPEG, TIFF, BMP, DICOM, NIfTI or .npy) first")
    name = Path(path).name
    if allowed_extension(name) is None:
        raise DataError(f"{name}: not an accepted file type; upload one of {', '.join(ALLOWED_EXTENSIONS)}")
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise DataError(f"{name}: only files uploaded through this page can be read")
    if not resolved.is_file():
        raise DataError(f"{name}: the upload is no longer on the server; upload it again")
    return resolved


def _load_kwargs(fmt: str, options: ViewOptions) -> dict:
    kwargs: dict = {"window": (options.window or "auto").strip()}
    if fmt == "nifti":
        kwargs.update(axis=int(options.axis), slice=options.slice, t=int(options.t))
    elif fmt == "dicom":
        kwargs["frame"] = int(options.frame)
    return kwargs


def load_view(path: Path, options: ViewOptions, max_image_pixels: int) -> LoadedImage:
    """Decode ``path`` (checked by :func:`check_upload`) as the options say; DataError if it cannot.

    The reader checks the header against ``max_image_pixels`` first: a small file that would
    decode to a huge image is refused before decoding."""
    fmt = file_format(path)
    kwargs = _load_kwargs(fmt, options)
    try:
        return load_array(path, format=fmt, max_image_pixels=max_image_pixels, **kwargs)
    except DataError as err:
        raise DataError(str(err).replace(str(path), path.name)) from None
    except (OSError, ValueError, MemoryError) as err:  # decoders' own failures on hostile or broken files
        raise DataError(
            f"{path.name}: cannot decode this file ({type(err).__name__}); is it really an image?"
        ) from None


def describe(loaded: LoadedImage, name: str) -> str:
    """One line about the decoded image, for the info text under the preview."""
    height, width = loaded.pixels.shape[:2]
    parts = [name, f"{loaded.kind.upper() if loaded.kind != 'raster' else 'image'} {width}x{height}"]
    meta = loaded.meta
    if meta.get("modality"):
        parts.append(f"modality {meta['modality']}")
    if loaded.kind == "dicom" and meta.get("frames", 1) > 1:
        parts.append(f"frame {meta['frame']} of {meta['frames']}")
    if loaded.kind == "nifti":
        shape = "x".join(str(s) for s in meta["shape"])
        parts.append(f"volume {shape}, axis {meta['axis']}, slice {meta['slice']}")
        if len(meta["shape"]) == 4:
            parts.append(f"t {meta['t']}")
    low, high = loaded.window
    parts.append(f"window {low:g}..{high:g}{' ' + loaded.units if loaded.units else ''}")
    return " | ".join(parts)
