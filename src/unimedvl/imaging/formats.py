"""Image file types: the one list of suffixes, which reader each suffix means, and the upload subset.

Every module that asks "is this an image file?" or "which reader opens it?" uses these names
(the loader :mod:`unimedvl.imaging.medical_io`, folder scans for training images, the app and the
HTTP API uploads, the check on a Request's texts), so adding a format is one edit here.

Suffixes are lower case and matched on the lower-cased name's end; ``.nii.gz`` is one suffix, so
:func:`image_suffix` returns the longest match.
"""

from __future__ import annotations

import os

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPY_SUFFIXES = (".npy",)
# Every suffix the loader reads, by reader. A file without one of them is sniffed (DICOM's "DICM" marker).
FORMAT_SUFFIXES = {"raster": RASTER_SUFFIXES, "dicom": DICOM_SUFFIXES, "nifti": NIFTI_SUFFIXES, "npy": NPY_SUFFIXES}
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES + NPY_SUFFIXES
# What the web app and the HTTP API accept from a client: the formats of medical images and of the
# usual photographs; the rarer raster types (.gif, .webp, .ppm, .pgm) and DICOM's other spellings
# (.dicom, .ima) are left out, so the upload box and its error message list what people send.
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz", ".npy")
# PIL's format name -> the suffix a file of that format is written with (benchmark image extraction).
PIL_FORMAT_SUFFIX = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "GIF": ".gif",
    "WEBP": ".webp",
    "PPM": ".ppm",
}


def image_suffix(name: str | os.PathLike[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str | None:
    """The suffix of ``suffixes`` that ``name`` ends with (lower case, the longest: ``.nii.gz``), or None.

    A bare suffix (a file named ``.png``) is no image name."""
    lower = os.fspath(name).lower()
    matches = [ext for ext in suffixes if lower.endswith(ext) and len(lower) > len(ext)]
    return max(matches, key=len) if matches else None


def has_image_suffix(name: str | os.PathLike[str]) -> bool:
    """True when ``name`` ends with a suffix the loader reads."""
    return os.fspath(name).lower().endswith(IMAGE_SUFFIXES)


def format_of(name: str | os.PathLike[str]) -> str | None:
    """The reader (``raster``, ``dicom``, ``nifti``, ``npy``) that ``name``'s suffix means, or None."""
    lower = os.fspath(name).lower()
    return next((fmt for fmt, suffixes in FORMAT_SUFFIXES.items() if lower.endswith(suffixes)), None)
