"""Input images of API requests: base64 data URLs (chat) and multipart files (edits) to PIL images.

The server never fetches anything: an ``image_url`` must carry the image itself as a data URL;
``http(s)://`` URLs, ``file://`` URLs and paths are refused. The bytes are decoded in memory by the
upload reader the web app uses too (:func:`unimedvl.imaging.views.decode_view`): headers first, so
an image over the pixel limit is refused before its pixels are decoded, then PNG/JPEG/TIFF/BMP,
DICOM (``application/dicom``) or NIfTI (``application/x-nifti``, gzipped or not). DICOM and NIfTI
views are chosen with data-URL parameters, e.g. ``data:application/dicom;window=lung;base64,...`` or
``data:application/x-nifti;axis=2;slice=40;base64,...`` (multipart: form fields of the same names).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from unimedvl.api.errors import bad_request
from unimedvl.errors import DataError
from unimedvl.imaging.formats import UPLOAD_SUFFIXES
from unimedvl.imaging.views import (  # noqa: F401 (VIEW_KEYS, sniff_suffix: re-exported, the API's names)
    MIME_SUFFIX,
    VIEW_KEYS,
    ViewOptions,
    bytes_suffix,
    decode_view,
    sniff_suffix,
    view_from_fields,
)


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
        raise bad_request(
            f"{where}: remote URLs are not fetched (this server downloads nothing); send the image "
            "inline as a base64 data URL, data:image/png;base64,...",
            where,
            "remote_url_refused",
        )
    if not lower.startswith("data:"):
        raise bad_request(
            f"{where}: only base64 data URLs are accepted (data:<mime>;base64,<data>); file paths and "
            "other URL schemes are refused",
            where,
            "invalid_image_url",
        )
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


def suffix_for(data: bytes, mime: str, filename: str | None, where: str) -> str:
    """The reader suffix: from the file name, else the MIME type, else the content."""
    suffix = bytes_suffix(data, mime, filename)
    if suffix is None:
        accepted = ", ".join(sorted(MIME_SUFFIX))
        raise bad_request(
            f"{where}: {mime or 'unknown type'} is not an accepted image type; send one of {accepted} "
            f"(or a file named {', '.join(UPLOAD_SUFFIXES)})",
            where,
            "unsupported_image_type",
        )
    return suffix


def view_options(params: Mapping[str, str], where: str) -> ViewOptions:
    """How a DICOM/NIfTI becomes a 2-D image, from data-URL parameters or form fields."""
    try:
        return view_from_fields(params)
    except DataError as err:
        raise bad_request(f"{where}: {err}", where) from None


def decode_image(data: bytes, suffix: str, view: ViewOptions, max_image_pixels: int, where: str) -> Image.Image:
    """An RGB image from the bytes of one file, through the shared checked reader (nothing written to disk)."""
    try:
        return decode_view(data, suffix, view, max_image_pixels, where).to_pil()
    except DataError as err:
        raise bad_request(str(err), where, "invalid_image") from None


def image_from_data_url(url: str, max_image_pixels: int, where: str) -> Image.Image:
    """The image in a chat ``image_url`` (see the module docstring)."""
    parsed = parse_data_url(url, where)
    suffix = suffix_for(parsed.data, parsed.mime, None, where)
    return decode_image(parsed.data, suffix, view_options(parsed.params, where), max_image_pixels, where)


def image_from_upload(
    data: bytes, filename: str | None, content_type: str | None, view: ViewOptions, max_image_pixels: int, where: str
) -> Image.Image:
    """The image in a multipart file part (the official client names it from the file or sends bytes)."""
    if not data:
        raise bad_request(f"{where}: the uploaded file is empty", where)
    mime = (content_type or "").split(";")[0].strip().lower()
    return decode_image(data, suffix_for(data, mime, filename, where), view, max_image_pixels, where)
