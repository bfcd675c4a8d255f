"""Uploads to images: the view options the web app and the HTTP API share, and how a file or its bytes
becomes a 2-D image under them.

A *view* says how a file is turned into one 2-D image: the intensity window, the NIfTI axis, slice
and volume, the DICOM frame (:class:`ViewOptions`; the app's controls under the upload box, the
API's data-URL parameters and form fields of the same names, :data:`VIEW_KEYS`). Which reader
opens an upload follows from its name (:data:`~unimedvl.imaging.formats.UPLOAD_SUFFIXES`), else
from its MIME type (:data:`MIME_SUFFIX`), else from its first bytes (:func:`sniff_suffix`).

Decoding checks the header against the pixel limit before any pixel is decoded. Messages name the
upload by its base name (a file) or by the name the caller gives (bytes), never by a server path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unimedvl.errors import DataError
from unimedvl.imaging.formats import UPLOAD_SUFFIXES, format_of, image_suffix
from unimedvl.imaging.medical_io import LoadedImage, load_array, load_bytes

VIEW_KEYS = ("window", "axis", "slice", "t", "frame")
# MIME type -> the suffix whose reader opens it. NIfTI has no registered type; these are the usual ones.
MIME_SUFFIX = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "image/x-ms-bmp": ".bmp",
    "application/dicom": ".dcm",
    "application/x-nifti": ".nii",
    "application/nifti": ".nii",
    "image/x-nifti": ".nii",
    "application/x-nifti-gz": ".nii.gz",
}
SNIFFED = ("application/octet-stream", "")  # no useful type: the content decides


@dataclass(frozen=True)
class ViewOptions:
    """How a file is turned into a 2-D image (the controls under the app's upload box)."""

    window: str = "auto"  # preset name, mode (auto, file, minmax, percentile, full) or "C,W"
    axis: int = 2  # NIfTI: array axis cut
    slice: int | None = None  # NIfTI: index along axis; None: the middle
    t: int = 0  # NIfTI: volume of a 4-D series
    frame: int = 0  # DICOM: frame of a multi-frame file


def view_from_fields(fields: Mapping[str, Any]) -> ViewOptions:
    """The view that text fields (data-URL parameters, form fields) name; empty ones keep the default.
    DataError naming the field when a number is not an integer."""
    values: dict[str, Any] = {}
    for key in VIEW_KEYS:
        raw = fields.get(key)
        if raw is None or str(raw).strip() == "":
            continue
        if key == "window":
            values[key] = str(raw).strip()
            continue
        try:
            values[key] = int(raw)
        except ValueError:
            raise DataError(f"{key}={raw!r} must be an integer") from None
    return ViewOptions(**values)


def upload_suffix(name: str) -> str | None:
    """The accepted upload suffix ``name`` ends with (lower case, ``.nii.gz`` whole), or None."""
    return image_suffix(name, UPLOAD_SUFFIXES)


def upload_format(name: str | os.PathLike[str]) -> str:
    """dicom | nifti | npy | raster, from the (already checked) upload suffix."""
    return format_of(Path(name).name) or "raster"


def sniff_suffix(data: bytes) -> str | None:
    """The file suffix the bytes look like (magic numbers), or None."""
    if data[128:132] == b"DICM":  # first: a DICOM preamble may itself be a TIFF header (dual-format files)
        return ".dcm"
    for magic, suffix in (
        (b"\x89PNG", ".png"),
        (b"\xff\xd8\xff", ".jpg"),
        (b"II*\x00", ".tif"),
        (b"MM\x00*", ".tif"),
        (b"BM", ".bmp"),
        (b"\x93NUMPY", ".npy"),
    ):
        if data.startswith(magic):
            return suffix
    if data[:2] == b"\x1f\x8b":
        return ".nii.gz"  # the only compressed format the readers take
    header_size = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
    if len(data) >= 4 and header_size & {348, 540}:
        return ".nii"  # the header size that opens a NIfTI-1 / NIfTI-2 file
    return None


def bytes_suffix(data: bytes, mime: str, filename: str | None) -> str | None:
    """The reader suffix of uploaded bytes: from the file name, else the MIME type, else the content."""
    suffix = upload_suffix(filename) if filename else None
    if suffix is None and mime in MIME_SUFFIX:
        suffix = MIME_SUFFIX[mime]
        if suffix == ".nii" and data[:2] == b"\x1f\x8b":
            suffix = ".nii.gz"
    if suffix is None and mime in SNIFFED:
        suffix = sniff_suffix(data)
    return suffix


def _load_kwargs(fmt: str, options: ViewOptions) -> dict:
    kwargs: dict = {"format": fmt, "window": (options.window or "auto").strip()}
    if fmt == "nifti":
        kwargs.update(axis=int(options.axis), slice=options.slice, t=int(options.t))
    elif fmt == "dicom":
        kwargs["frame"] = int(options.frame)
    return kwargs


def _decoder_failure(name: str, err: Exception) -> DataError:
    return DataError(f"{name}: cannot decode this file ({type(err).__name__}); is it really an image?")


def load_view(path: Path, options: ViewOptions, max_image_pixels: int) -> LoadedImage:
    """Decode the upload at ``path`` (its suffix already checked) as the options say; DataError if it cannot.

    The reader checks the header against ``max_image_pixels`` first: a small file that would
    decode to a huge image is refused before decoding."""
    try:
        return load_array(path, max_image_pixels=max_image_pixels, **_load_kwargs(upload_format(path), options))
    except DataError as err:
        raise DataError(str(err).replace(str(path), path.name)) from None
    except (OSError, ValueError, MemoryError) as err:  # decoders' own failures on hostile or broken files
        raise _decoder_failure(path.name, err) from None


def decode_view(data: bytes, suffix: str, options: ViewOptions, max_image_pixels: int, name: str) -> LoadedImage:
    """Decode the bytes of one uploaded file, read as a ``suffix`` file, as the options say; ``name``
    stands for the file in messages. Nothing is written to disk (see ``medical_io.load_bytes``)."""
    try:
        return load_bytes(
            data, name, max_image_pixels=max_image_pixels, **_load_kwargs(format_of(suffix) or "raster", options)
        )
    except DataError:
        raise
    except (OSError, ValueError, MemoryError) as err:
        raise _decoder_failure(name, err) from None
