"""Input images of API requests: base64 data URLs (chat) and multipart files (edits) to PIL images.

The server never fetches anything: an ``image_url`` must carry the image itself as a data URL;
``http(s)://`` URLs, ``file://`` URLs and paths are refused. The bytes are decoded by the web
app's reader (:func:`unimedvl.app.uploads.load_view`): headers first, so an image over the pixel
limit is refused before its pixels are decoded, then PNG/JPEG/TIFF/BMP, DICOM (``application/dicom``)
or NIfTI (``application/x-nifti``, gzipped or not). DICOM and NIfTI views are chosen with data-URL
parameters, e.g. ``data:application/dicom;window=lung;base64,...`` or
``data:application/x-nifti;axis=2;slice=40;base64,...`` (multipart: form fields of the same names).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from PIL import Image

from unimedvl.api.errors import bad_request
from unimedvl.app.presets import ALLOWED_EXTENSIONS
from unimedvl.app.uploads import ViewOptions, allowed_extension, load_view
from unimedvl.errors import DataError

# MIME type -> file suffix the reader keys on. NIfTI has no registered type; these are the usual ones.
MIME_SUFFIX = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/tiff": ".tif", "image/bmp": ".bmp",
    "image/x-ms-bmp": ".bmp", "application/dicom": ".dcm", "application/x-nifti": ".nii",
    "application/nifti": ".nii", "image/x-nifti": ".nii", "application/x-nifti-gz": ".nii.gz",
}  # fmt: skip
SNIFFED = ("application/octet-stream", "")  # no useful type: the content decides
VIEW_KEYS = ("window", "axis", "slice", "t", "frame")


@dataclass(frozen=True)
class DataURL:
    """A parsed ``data:`` URL: its MIME type, its ``;key=value`` parameters and the decoded bytes."""

    mime: str
    params: dict[str, str]
    data: bytes


def parse_data_url(url: str, where: str) -> DataURL:
    """The data URL in ``url`` (a base64 one), or a 400 that says what to send instead."""
    text = url.strip()
    lower = text[:16].lower()
    if lower.startswith(("http://", "https://", "ftp://")):
        raise bad_request(f"{where}: remote URLs are not fetched (this server downloads nothing); send the image "
                          "inline as a base64 data URL, data:image/png;base64,...", where,
                          "remote_url_refused")  # fmt: skip
    if not lower.startswith("data:"):
        raise bad_request(f"{where}: only base64 data URLs are accepted (data:<mime>;base64,<data>); file paths and "
                          "other URL schemes are refused", where, "invalid_image_url")  # fmt: skip
    header, comma, payload = text[5:].partition(",")
    if not comma:
        raise bad_request(f"{where}: a data URL needs a comma before its data (data:image/png;base64,...)", where)
    parts = [p.strip() for p in header.split(";")]
    if "base64" not in (p.lower() for p in parts[1:]):
        raise bad_request(f"{where}: image data URLs must be base64 encoded (data:image/png;base64,...)", where)
    params = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq:
            params[key.strip().lower()] = value.strip()
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data is not valid base64", where) from None
    if not data:
        raise bad_request(f"{where}: the image is empty", where)
    return DataURL(parts[0].lower(), params, data)


def sniff_suffix(data: bytes) -> str | None:
    """The file suffix the bytes look like (magic numbers), or None."""
    if data[128:132] == b"DICM":  # first: a DICOM preamble may itself be a TIFF header (dual-format files)
        return ".dcm"
    for magic, suffix in ((b"\x89PNG", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"II*\x00", ".tif"),
                          (b"MM\x00*", ".tif"), (b"BM", ".bmp"), (b"\x93NUMPY", ".npy")):  # fmt: skip
        if data.startswith(magic):
            return suffix
    if data[:2] == b"\x1f\x8b":
        return ".nii.gz"  # the only compressed format the readers take
    header_size = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
    if len(data) >= 4 and header_size & {348, 540}:
        return ".nii"  # the header size that opens a NIfTI-1 / NIfTI-2 file
    return None


def suffix_for(data: bytes, mime: str, filename: str | None, where: str) -> str:
    """The reader suffix: from the file name, else the MIME type, else the content."""
    suffix = allowed_extension(filename) if filename else None
    if suffix is None and mime in MIME_SUFFIX:
        suffix = MIME_SUFFIX[mime]
        if suffix == ".nii" and data[:2] == b"\x1f\x8b":
            suffix = ".nii.gz"
    if suffix is None and mime in SNIFFED:
        suffix = sniff_suffix(data)
    if suffix is None:
        accepted = ", ".join(sorted(MIME_SUFFIX))
        raise bad_request(f"{where}: {mime or 'unknown type'} is not an accepted image type; send one of {accepted} "
                          f"(or a file named {', '.join(ALLOWED_EXTENSIONS)})", where,
                          "unsupported_image_type")  # fmt: skip
    return suffix


def view_options(params: Mapping[str, str], where: str) -> ViewOptions:
    """How a DICOM/NIfTI becomes a 2-D image, from data-URL parameters or form fields."""
    values: dict = {}
    for key in VIEW_KEYS:
        raw = params.get(key)
        if raw is None or str(raw).strip() == "":
            continue
        if key == "window":
            values[key] = str(raw).strip()
            continue
        try:
            values[key] = int(raw)
        except ValueError:
            raise bad_request(f"{where}: {key}={raw!r} must be an integer", where) from None
    return ViewOptions(**values)


def decode_image(data: bytes, suffix: str, view: ViewOptions, max_image_pixels: int, where: str) -> Image.Image:
    """An RGB image from the bytes of one file, through the app's checked reader."""
    with tempfile.TemporaryDirectory(prefix="unimedvl-api-") as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return load_view(path, view, max_image_pixels).to_pil()
        except DataError as err:
            raise bad_request(str(err).replace(path.name, where), where, "invalid_image") from None


def image_from_data_url(url: str, max_image_pixels: int, where: str) -> Image.Image:
    """The image in a chat ``image_url`` (see the module docstring)."""
    parsed = parse_data_url(url, where)
    suffix = suffix_for(parsed.data, parsed.mime, None, where)
    return decode_image(parsed.data, suffix, view_options(parsed.params, where), max_image_pixels, where)


def image_from_upload(data: bytes, filename: str | None, content_type: str | None, view: ViewOptions,
                      max_image_pixels: int, where: str) -> Image.Image:  # fmt: skip
    """The image in a multipart file part (the official client names it from the file or sends bytes)."""
    if not data:
        raise bad_request(f"{where}: the uploaded file is empty", where)
    mime = (content_type or "").split(";")[0].strip().lower()
    return decode_image(data, suffix_for(data, mime, filename, where), view, max_image_pixels, where)
