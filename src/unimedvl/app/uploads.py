"""Uploaded files: which ones the app reads, and the one-line description of a decoded upload.

The app reads only files that gradio itself received (its upload folder) or that it wrote itself
(the example folder): a path typed or forged by a client is refused before anything opens it.
The extension must be one of :data:`~unimedvl.imaging.formats.UPLOAD_SUFFIXES`, and the content is
checked by decoding it (a text file renamed ``.png`` fails there). Messages name the file by its
base name only, so server paths never reach the page.

How a file becomes an image (window, slice, frame) is shared with the HTTP API and lives in
:mod:`unimedvl.imaging.views` (``ViewOptions``, ``load_view``; re-exported here).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from unimedvl.errors import DataError
from unimedvl.imaging.formats import UPLOAD_SUFFIXES
from unimedvl.imaging.medical_io import LoadedImage
from unimedvl.imaging.views import ViewOptions, load_view, upload_format, upload_suffix

# An absolute path inside a message: a slash-separated run of at least two parts ("/srv/app/x.png").
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"(),;:/]+)+/([^\s'\"(),;:/]+)")
allowed_extension = upload_suffix  # the accepted suffix a name ends with, or None (the app's old name)
file_format = upload_format  # dicom | nifti | npy | raster (the app's old name)


def without_paths(message: str) -> str:
    """``message`` with every absolute path replaced by its last part: the page never shows where the
    server keeps files (upload folders, checkpoints, gradio's cache)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), message)


def check_upload(path: str | os.PathLike[str] | None, roots: Sequence[str | os.PathLike[str]]) -> Path:
    """The resolved path of an upload the app may read; DataError (a message for the page) otherwise."""
    if path is None or not str(path).strip():
        raise DataError("no image: upload a file (PNG, JPEG, TIFF, BMP, DICOM, NIfTI or .npy) first")
    name = Path(path).name
    if upload_suffix(name) is None:
        raise DataError(f"{name}: not an accepted file type; upload one of {', '.join(UPLOAD_SUFFIXES)}")
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise DataError(f"{name}: only files uploaded through this page can be read")
    if not resolved.is_file():
        raise DataError(f"{name}: the upload is no longer on the server; upload it again")
    return resolved


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


__all__ = ["ViewOptions", "allowed_extension", "check_upload", "describe", "file_format", "load_view", "without_paths"]
