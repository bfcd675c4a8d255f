"""Read medical images (DICOM, NIfTI, .npy, PNG/JPEG/TIFF) into 8-bit RGB for the model.

A *path spec* is a file path with optional options after ``#``::

    scan.dcm#window=lung               CT shown with the lung window (centre -600 HU, width 1500)
    cine.dcm#frame=3                   frame 3 (0-based) of a multi-frame DICOM
    head.nii.gz#axis=2&slice=40        slice 40 along array axis 2 (default: middle slice, axis 2)
    fmri.nii.gz#t=1&percentile=1,99    volume 1 of a 4-D series, 1st-99th percentile window
    xray16.png#window=minmax           16-bit PNG stretched to its own min..max

The same options may be passed as keyword arguments (``load_image(path, window="lung")``);
keyword arguments override the fragment. A path containing ``#`` that names an existing file is
taken as a plain path.

Options (an option that does not apply to the file's format is a DataError):

``window``
    How intensities map to 0..255: a preset name (see :data:`WINDOW_PRESETS`); ``C,W`` (centre and
    width, e.g. ``40,400``); ``file`` (the DICOM file's first WindowCenter/WindowWidth);
    ``minmax``; ``percentile``; ``full`` (the full range of the stored integer type, e.g.
    0..65535 for 16-bit); ``auto`` (default, per format, below). A window ``C,W`` maps
    ``[C - W/2, C + W/2]`` linearly onto ``[0, 255]`` (DICOM's own formula uses ``W - 1``; the two
    differ by under one grey level). Colour images are never windowed unless asked.
``percentile``
    ``LO,HI`` percentiles for ``window=percentile`` (default ``0.5,99.5``); giving it alone
    selects the percentile window.
``frame``
    0-based frame of a multi-frame DICOM or page of a multi-page TIFF/GIF (default 0).
``axis``, ``slice``, ``t``
    NIfTI only: array axis cut (default 2), index along it (default the middle), and volume of a
    4-D series (default 0).
``format``
    Force the reader: ``dicom``, ``nifti``, ``npy`` or ``raster`` (default: from the extension,
    sniffing the DICOM ``DICM`` marker for files without one).

Default windows (``window=auto``):

* DICOM: the file's window when it has one, otherwise min..max, computed after the modality
  rescale (slope/intercept, so CT values are Hounsfield units). MONOCHROME1 is inverted after
  windowing so that bone is bright, as in every viewer.
* NIfTI: the 0.5th-99.5th percentiles of the chosen slice (MR intensities have no absolute
  scale and a few hot voxels would otherwise darken the whole slice).
* 8-bit raster: unchanged. 16-bit raster: the *full* range (value / 65535). We chose full range
  over min..max because paired restoration data (noisy input, clean target) must map the same
  stored value to the same grey in both images; min..max would give each image its own mapping.
  Data that fill only 12 bits of a 16-bit file look dark this way: pass ``window=minmax`` (or
  ``percentile``) for those.
* ``.npy``: ``uint8`` unchanged, ``uint16`` full range, floats already within ``[0, 1]`` taken as
  ``[0, 1]`` (the convention of normalised arrays, e.g. dipy's T1 slice), anything else min..max.

Size: an image whose width x height (read from its header: PIL's lazy open, DICOM Rows/Columns,
the NIfTI header, the .npy header) exceeds ``max_image_pixels`` (default 16384 x 16384; every reader
takes the argument, every command the flag ``--max-image-pixels``) is a DataError before any pixel
is decoded (:mod:`unimedvl.imaging.pixel_limit`).

Bytes: :func:`load_bytes` decodes the bytes of an upload as :func:`load_array` decodes a file, with the
same options and limit, and writes nothing to disk (DICOM, NIfTI, gzipped or not, and .npy are read
from memory too).

Orientation: NIfTI slices use array axes, not world axes: the first remaining axis runs left to
right and the second bottom to top (the usual neuro-viewer view of RAS-stored data). No
reorientation to RAS is attempted.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import os
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from unimedvl.errors import DataError
from unimedvl.fileio import missing_file_problem
from unimedvl.imaging.formats import format_of
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS, check_pixels, open_raster, pil_guard_replaced
from unimedvl.imaging.windowing import (  # noqa: F401 (re-exported: the readers' public names)
    DEFAULT_PERCENTILES,
    WINDOW_MODES,
    WINDOW_PRESETS,
    LoadedImage,
    choose_window,
    integer_range,
)

FORMATS = ("dicom", "nifti", "npy", "raster")

_OPTIONS_FOR = {
    "dicom": {"window", "percentile", "frame", "format"},
    "nifti": {"window", "percentile", "axis", "slice", "t", "format"},
    "npy": {"window", "percentile", "format"},
    "raster": {"window", "percentile", "frame", "format"},
}
_ALL_OPTIONS = sorted(set().union(*_OPTIONS_FOR.values()))


# ---------------------------------------------------------------------------------------------
# Path specs and options.


def parse_path_spec(spec: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """Split ``file#k=v&k2=v2`` into the file path and its raw option strings."""
    spec = os.fspath(spec)
    if "#" not in spec or os.path.exists(spec):
        return spec, {}
    path, fragment = spec.rsplit("#", 1)
    options: dict[str, str] = {}
    for item in filter(None, fragment.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DataError(f"{spec}: option {item!r} after '#' must look like key=value")
        options[key.strip()] = value.strip()
    return path, options


def _detect_format(path: str, data: bytes | None = None) -> str:
    fmt = format_of(path)
    if fmt is not None:
        return fmt
    if data is not None:
        head = data[:132]
    else:
        try:  # no telling extension: DICOM part 10 files carry "DICM" after a 128-byte preamble
            with open(path, "rb") as handle:
                head = handle.read(132)
        except OSError:
            return "raster"
    return "dicom" if head[128:132] == b"DICM" else "raster"


def _as_int(path: str, key: str, value: Any, minimum: int = 0) -> int:
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"{path}: option {key}={value!r} must be an integer") from None
    if number < minimum:
        raise DataError(f"{path}: option {key}={number} must be >= {minimum}")
    return number


def _as_pair(path: str, key: str, value: Any) -> tuple[float, float]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        first, second = (float(v) for v in items)
    except (TypeError, ValueError):
        raise DataError(f"{path}: option {key}={value!r} must be two numbers, e.g. {key}=40,400") from None
    return first, second


def _options(
    spec: str | os.PathLike[str], kwargs: dict[str, Any], data: bytes | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(file path, format, validated options) from a path spec plus keyword overrides; with ``data``
    (the file's bytes), ``spec`` only names them and no file is looked for."""
    path, options = parse_path_spec(spec) if data is None else (os.fspath(spec), {})
    merged: dict[str, Any] = {**options, **{k: v for k, v in kwargs.items() if v is not None}}
    fmt = merged.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"{path}: format={fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    if data is None and not os.path.exists(path):
        raise DataError(f"{path}: {missing_file_problem(path)}")
    if data is None and not os.path.isfile(path):
        raise DataError(f"{path}: not a file")
    fmt = fmt or _detect_format(path, data)
    for key in merged:
        if key not in _ALL_OPTIONS:
            raise DataError(f"{path}: unknown option {key!r}; known options: {', '.join(_ALL_OPTIONS)}")
        if key not in _OPTIONS_FOR[fmt]:
            raise DataError(
                f"{path}: option {key!r} does not apply to {fmt} files "
                f"(options for {fmt}: {', '.join(sorted(_OPTIONS_FOR[fmt]))})"
            )
    out: dict[str, Any] = {}
    for key in ("frame", "axis", "slice", "t"):
        if key in merged:
            out[key] = _as_int(path, key, merged[key])
    if "percentile" in merged:
        low, high = _as_pair(path, "percentile", merged["percentile"])
        if not 0 <= low < high <= 100:
            raise DataError(f"{path}: percentile={low:g},{high:g} needs 0 <= low < high <= 100")
        out["percentile"] = (low, high)
    window = merged.get("window", "percentile" if "percentile" in merged else "auto")
    if isinstance(window, str) and "," not in window:
        name = window.strip().lower().replace("-", "_").replace(" ", "_")
        if name not in WINDOW_PRESETS and name not in WINDOW_MODES:
            raise DataError(
                f"{path}: window={window!r} is unknown; use a preset ({', '.join(WINDOW_PRESETS)}), "
                f"one of {', '.join(WINDOW_MODES)}, or CENTRE,WIDTH such as 40,400"
            )
        out["window"] = WINDOW_PRESETS.get(name, name)
    else:
        centre, width = _as_pair(path, "window", window)
        if width <= 0:
            raise DataError(f"{path}: window width must be positive, got {width:g}")
        out["window"] = (centre, width)
    return path, fmt, out


# ---------------------------------------------------------------------------------------------
# Readers. Each returns a LoadedImage; `_size_*` read only what is needed for (width, height).


@contextlib.contextmanager
def _quiet_pydicom():
    """pydicom's own logging and warnings off: a corrupt file ends in our one DataError line, not in
    pydicom's traceback (its decoders log every failed plugin with ``LOGGER.exception``) before it."""
    logger = logging.getLogger("pydicom")  # its child loggers' records stop here too (propagation)
    disabled, propagate = logger.disabled, logger.propagate
    logger.disabled, logger.propagate = True, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled, logger.propagate = disabled, propagate


def _dicom_read(path: str, headers_only: bool, source: Any = None):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with _quiet_pydicom():
            return pydicom.dcmread(path if source is None else source, stop_before_pixels=headers_only)
    except InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file (no DICM header); pass format=... if it is another kind") from None
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        NotImplementedError,
        struct.error,
    ) as err:
        raise DataError(f"{path}: unreadable DICOM ({type(err).__name__}: {err})") from None


def _dicom_frames(ds: Any, path: str, frame: int) -> int:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame >= frames:
        raise DataError(f"{path}: frame={frame} but the file has {frames} frame(s) (frames count from 0)")
    return frames


def _load_dicom(
    path: str, options: dict[str, Any], limit: int, reduce_to: tuple[int, int] | None, source: Any = None
) -> LoadedImage:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    ds = _dicom_read(path, headers_only=False, source=source)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (modality {ds.get('Modality', '?')})")
    frame = options.get("frame", 0)
    frames = _dicom_frames(ds, path, frame)
    check_pixels(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), limit)  # one frame is decoded
    try:
        with pil_guard_replaced(), _quiet_pydicom():  # JPEG-compressed DICOM decodes through PIL; size checked
            array = pixel_array(ds, index=frame if frames > 1 else None)
    except Exception as err:  # decoder plugins raise many types; all mean "cannot decode"
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise DataError(f"{path}: cannot decode the pixel data (transfer syntax {name}): {err}") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    meta = {"modality": str(ds.get("Modality", "")), "photometric": photometric, "frames": frames, "frame": frame}
    window_choice = options.get("window", "auto")
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if bits > 8:  # 16-bit LUT entries: keep the top 8 bits (8-bit palettes are stored shifted)
            rgb = rgb >> (bits - 8)
        pixels = rgb.astype(np.float32)
        window = (0.0, 255.0) if window_choice == "auto" else choose_window(pixels, window_choice, options, path)
        return LoadedImage(pixels, window, kind="dicom", path=path, meta=meta)
    if array.ndim == 3:  # RGB (YBR is converted to RGB by pydicom)
        pixels = array.astype(np.float32)
        bits = int(ds.get("BitsStored", 8) or 8)
        full = (0.0, float(2**bits - 1))
        window = (
            full if window_choice == "auto" else choose_window(pixels, window_choice, options, path, full_range=full)
        )
        return LoadedImage(pixels, window, kind="dicom", path=path, meta=meta)
    stored = _stored_range(ds)
    pixels = np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
    full = None
    if stored is not None:  # the stored range after the same linear rescale
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        ends = sorted((stored[0] * slope + intercept, stored[1] * slope + intercept))
        full = (ends[0], ends[1])
    window = choose_window(
        pixels,
        window_choice,
        options,
        path,
        file_window=_file_window(ds),
        full_range=full,
        auto="file" if _file_window(ds) is not None else "minmax",
    )
    units = "HU" if meta["modality"] == "CT" and "RescaleIntercept" in ds else ""
    return LoadedImage(
        pixels, window, invert=photometric == "MONOCHROME1", kind="dicom", units=units, path=path, meta=meta
    )


def _stored_range(ds: Any) -> tuple[float, float] | None:
    bits = ds.get("BitsStored")
    if not bits:
        return None
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _file_window(ds: Any) -> tuple[float, float] | None:
    """The file's (centre, width); multi-valued windows list alternatives, so take the first."""

    def first(value: Any) -> float:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else float(value)

    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        centre, width = first(centre), first(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (centre, width) if width > 0 else None


def _size_dicom(path: str, options: dict[str, Any], limit: int) -> tuple[int, int]:
    ds = _dicom_read(path, headers_only=True)
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise DataError(f"{path}: DICOM file has no Rows/Columns (no image; modality {ds.get('Modality', '?')})")
    _dicom_frames(ds, path, options.get("frame", 0))
    check_pixels(path, int(cols), int(rows), limit)
    _check_dicom_decoder(ds, path)
    return int(cols), int(rows)


def _check_dicom_decoder(ds: Any, path: str) -> None:
    """DataError when the header's transfer syntax has no installed pixel decoder (found without decoding)."""
    from pydicom.pixels import get_decoder

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        return
    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise DataError(
            f"{path}: no pixel decoder exists for its transfer syntax {name}; convert the file "
            "(e.g. to uncompressed Explicit VR Little Endian)"
        ) from None
    if not decoder.is_available:
        needs = "; ".join(str(m) for m in decoder.missing_dependencies[:3])
        raise DataError(
            f"{path}: its transfer syntax {name} needs a pixel decoder that is not installed ({needs}); "
            "install one of them or convert the file"
        )


def _nifti_index(path: str, shape: tuple[int, ...], options: dict[str, Any]) -> tuple[tuple, tuple[int, int], dict]:
    """The index into the volume, the 2-D (width, height) of the slice, and facts for meta."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:  # trailing singleton dims (e.g. 5-D with one echo)
        shape = shape[:-1]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) not in (3, 4):
        raise DataError(f"{path}: NIfTI image of shape {shape} is not 2-D, 3-D or 4-D")
    t = options.get("t", 0)
    if len(shape) == 4 and t >= shape[3]:
        raise DataError(f"{path}: t={t} but the series has {shape[3]} volume(s) (count from 0)")
    if len(shape) == 3 and t != 0:
        raise DataError(f"{path}: t={t} given but the image is 3-D (a single volume)")
    axis = options.get("axis", 2)
    if axis > 2:
        raise DataError(f"{path}: axis={axis} must be 0, 1 or 2")
    depth = shape[axis]
    index = options.get("slice", depth // 2)
    if index >= depth:
        raise DataError(f"{path}: slice={index} but axis {axis} has {depth} slice(s) (count from 0)")
    key: list[Any] = [slice(None)] * 3
    key[axis] = index
    if len(shape) == 4:
        key.append(t)
    rest = [shape[a] for a in range(3) if a != axis]
    return tuple(key), (rest[0], rest[1]), {"shape": shape, "axis": axis, "slice": index, "t": t}


def _nifti_open(path: str, source: Any = None):
    import nibabel as nib

    try:
        if source is None:
            return nib.load(path)
        # From memory: a gzipped volume is read through a stream that decompresses only up to the
        # slice asked for, as nib.load does for a file; the header size tells NIfTI-1 from NIfTI-2.
        stream = gzip.GzipFile(fileobj=source) if source.getbuffer()[:2].tobytes() == b"\x1f\x8b" else source
        head = stream.read(4)
        stream.seek(0)
        sizes = {int.from_bytes(head, "little"), int.from_bytes(head, "big")} if len(head) == 4 else set()
        if not sizes & {348, 540}:  # what nib.load sniffs in a file before it reads the header
            raise DataError(f"{path}: not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")
        kind = nib.Nifti2Image if 540 in sizes else nib.Nifti1Image
        return kind.from_file_map(kind.make_file_map({"image": stream, "header": stream}))
    except (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        nib.wrapstruct.WrapStructError,
        OSError,
        EOFError,
        ValueError,
    ) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: unreadable NIfTI ({type(err).__name__}: {err})") from None


def _load_nifti(
    path: str, options: dict[str, Any], limit: int, reduce_to: tuple[int, int] | None, source: Any = None
) -> LoadedImage:
    image = _nifti_open(path, source)
    key, (first, second), facts = _nifti_index(path, image.shape, options)
    check_pixels(path, first, second, limit)  # from the header: the slice is not read yet
    try:
        if len(image.shape) < 3:  # a 2-D NIfTI: small, read it whole as one (x, y, 1) volume
            data = np.asarray(image.dataobj).reshape(facts["shape"])[key]
        else:  # slicing the proxy reads only this slice and applies scl_slope/scl_inter
            data = np.asarray(image.dataobj[key + (0,) * (len(image.shape) - len(key))])
    except (OSError, EOFError, ValueError, IndexError) as err:
        raise DataError(f"{path}: cannot read the slice ({type(err).__name__}: {err})") from None
    # data: (first remaining axis, second); show the first left-to-right, the second bottom-to-top.
    pixels = np.ascontiguousarray(np.flipud(np.asarray(data, dtype=np.float32).T))
    window = choose_window(pixels, options.get("window", "auto"), options, path, auto="percentile")
    return LoadedImage(pixels, window, kind="nifti", path=path, meta=facts)


def _size_nifti(path: str, options: dict[str, Any], limit: int) -> tuple[int, int]:
    image = _nifti_open(path)  # reads the header only; data stay on disk
    _, (first, second), _ = _nifti_index(path, image.shape, options)
    check_pixels(path, first, second, limit)
    return first, second


def _npy_open(path: str, source: Any = None) -> np.ndarray:
    try:  # a file is memory-mapped (only the header is read here); bytes are in memory already
        return np.load(path, mmap_mode="r", allow_pickle=False) if source is None else np.load(source)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: unreadable .npy ({type(err).__name__}: {err})") from None


def _npy_shape(path: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3)):
        return int(shape[1]), int(shape[0])
    raise DataError(f"{path}: .npy array of shape {shape} is not an image; expected (H, W), (H, W, 1) or (H, W, 3)")


def _load_npy(
    path: str, options: dict[str, Any], limit: int, reduce_to: tuple[int, int] | None, source: Any = None
) -> LoadedImage:
    array = _npy_open(path, source)  # a file is memory-mapped: only the header has been read
    check_pixels(path, *_npy_shape(path, array.shape), limit)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    pixels = np.asarray(array, dtype=np.float32)
    choice = options.get("window", "auto")
    full = integer_range(array.dtype)
    if choice == "auto":
        if array.dtype == np.uint8 or array.dtype == np.uint16 or array.dtype == np.bool_:
            choice = "full"
        elif np.issubdtype(array.dtype, np.floating) and np.nanmin(pixels) >= 0 and np.nanmax(pixels) <= 1:
            return LoadedImage(pixels, (0.0, 1.0), kind="npy", path=path, meta={"dtype": str(array.dtype)})
        else:
            choice = "minmax"
    window = choose_window(pixels, choice, options, path, full_range=full)
    return LoadedImage(pixels, window, kind="npy", path=path, meta={"dtype": str(array.dtype)})


_SWAP_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
# PIL's recommended gap for a two-step resize (Image.resize(reducing_gap=3)): reduce by an integer
# factor while the image stays at least 3x the target, then resample. Images under 3x the target
# are not reduced at all, so their pixels are exactly those of a full decode.
REDUCING_GAP = 3.0
_REDUCIBLE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation, from what the header holds: a PNG whose eXIf chunk follows the pixel data
    would need a full decode to find it (PIL's getexif() loads the image), so it is not looked for."""
    if image.format == "PNG" and "exif" not in image.info:
        return None
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is ignored when loading too (no rotation applied)
        return None


def _reduce(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """``image`` reduced by the largest integer factors that keep it REDUCING_GAP x ``target`` per side."""
    factor = tuple(max(1, int(side / max(1, want) / REDUCING_GAP)) for side, want in zip(image.size, target))
    if factor == (1, 1):
        return image
    if image.mode in _REDUCIBLE:  # modes Image.reduce does not take: an equivalent one it does
        image = image.convert(_REDUCIBLE[image.mode])
    try:
        return image.reduce(factor)
    except ValueError:  # another mode reduce() refuses: keep the full image (the resize still follows)
        return image


def _load_raster(
    path: str, options: dict[str, Any], limit: int, reduce_to: tuple[int, int] | None, source: Any = None
) -> LoadedImage:
    with (
        pil_guard_replaced(),
        open_raster(path if source is None else source, path, limit, options.get("frame", 0)) as opened,
    ):
        try:
            image = opened
            if reduce_to is not None:  # reduced in the stored orientation, before the EXIF rotation
                raw = reduce_to[::-1] if _orientation(opened) in _SWAP_ORIENTATIONS else reduce_to
                # JPEG decodes at 1/2, 1/4 or 1/8 scale, never below the asked size; others decode whole.
                opened.draft(None, tuple(int(math.ceil(side * REDUCING_GAP)) for side in raw))
                opened.load()
                image = _reduce(opened, raw)
            # Camera photos (dermatology, fundus) carry an EXIF rotation; the result is a loaded copy
            # (of the reduced image when there is one: the full decode is freed with the file).
            image = ImageOps.exif_transpose(image)
            image.load()
        except OSError as err:
            raise DataError(f"{path}: unreadable or truncated image ({err})") from None
    meta = {"mode": image.mode}
    choice = options.get("window", "auto")
    if image.mode in ("1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F", "LA"):
        if image.mode == "LA":
            image = image.convert("L")
        array = np.asarray(image)
        pixels = array.astype(np.float32)
        if image.mode.startswith("I;16"):
            full = (0.0, 65535.0)
        elif image.mode == "I":
            # 32-bit container: 16-bit PNG/TIFF data often arrive here; treat as 16-bit if it fits.
            fits = array.size and array.min() >= 0 and array.max() <= 65535
            full = (0.0, 65535.0) if fits else None
        elif image.mode == "F":
            full = None
        else:
            full = (0.0, 255.0) if image.mode == "L" else (0.0, 1.0)
        auto = "full" if full is not None else "minmax"
        window = choose_window(pixels, choice, options, path, full_range=full, auto=auto)
        return LoadedImage(pixels, window, kind="raster", path=path, meta=meta)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    window = (0.0, 255.0) if choice == "auto" else choose_window(pixels, choice, options, path, full_range=(0.0, 255.0))
    return LoadedImage(pixels, window, kind="raster", path=path, meta=meta)


def _size_raster(path: str, options: dict[str, Any], limit: int) -> tuple[int, int]:
    with open_raster(path, path, limit, options.get("frame", 0)) as image:
        width, height = image.size
        orientation = _orientation(image)
    return (height, width) if orientation in _SWAP_ORIENTATIONS else (width, height)


def _size_npy(path: str, options: dict[str, Any], limit: int) -> tuple[int, int]:
    width, height = _npy_shape(path, _npy_open(path).shape)
    check_pixels(path, width, height, limit)
    return width, height


_LOADERS = {"dicom": _load_dicom, "nifti": _load_nifti, "npy": _load_npy, "raster": _load_raster}
_SIZERS = {"dicom": _size_dicom, "nifti": _size_nifti, "npy": _size_npy, "raster": _size_raster}


# ---------------------------------------------------------------------------------------------
# Public API.


def load_array(
    path_spec: str | os.PathLike[str],
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    reduce_to: tuple[int, int] | None = None,
    **options: Any,
) -> LoadedImage:
    """Decode one 2-D image in its own units (HU for CT) with the window chosen by the options.

    An image over ``max_image_pixels`` (width x height, read from the header; default 16384 x 16384)
    is a DataError before anything is decoded. ``reduce_to=(width, height)``: the caller resizes to
    that size next, so a raster image may be decoded smaller (JPEG draft mode, then an integer
    reduction), never below ``REDUCING_GAP`` times it; the window is then computed on that image.
    """
    path, fmt, parsed = _options(path_spec, options)
    return _LOADERS[fmt](path, parsed, max_image_pixels, reduce_to)


def load_bytes(
    data: bytes, name: str, *, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, **options: Any
) -> LoadedImage:
    """Decode the bytes of one image file (an upload) as :func:`load_array` decodes a file, without
    writing them anywhere. ``name`` stands for the file in messages, and its suffix picks the reader
    unless ``format=`` is given (else DICOM is sniffed, then raster); the same options and limit apply."""
    path, fmt, parsed = _options(name, options, data=data)
    return _LOADERS[fmt](path, parsed, max_image_pixels, None, source=io.BytesIO(data))


def load_image(
    path_spec: str | os.PathLike[str],
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    reduce_to: tuple[int, int] | None = None,
    **options: Any,
) -> Image.Image:
    """Load any supported medical image as an 8-bit RGB PIL image (windowed, grey replicated)."""
    return load_array(path_spec, max_image_pixels=max_image_pixels, reduce_to=reduce_to, **options).to_pil()


def image_size(
    path_spec: str | os.PathLike[str], *, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, **options: Any
) -> tuple[int, int]:
    """(width, height) that :func:`load_image` would return, from headers where possible.

    Also checks that frame/slice/t options are in range and that the image is within
    ``max_image_pixels``, so validation catches both early.
    """
    path, fmt, parsed = _options(path_spec, options)
    return _SIZERS[fmt](path, parsed, max_image_pixels)
