"""Intensity windows: the CT presets, how a window is chosen, and the decoded image that carries one.

A window (low, high) maps ``low`` to 0 and ``high`` to 255, linearly, clipped: the one rule by which
every reader of :mod:`unimedvl.imaging.medical_io` turns Hounsfield units, MR intensities or 16-bit
values into the 8-bit grey the model sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from unimedvl.errors import DataError

# name -> (centre, width) in Hounsfield units (Radiopaedia's usual CT values).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "bone": (400.0, 1800.0),
}
WINDOW_MODES = ("auto", "file", "minmax", "percentile", "full")
DEFAULT_PERCENTILES = (0.5, 99.5)
_WINDOW_BLOCK = 1 << 20  # values windowed at a time: a 144 MP image would need gigabytes of float64 at once


@dataclass
class LoadedImage:
    """A decoded 2-D image in its own intensity units, plus the window that maps it to 0..255."""

    pixels: np.ndarray  # float32, (H, W) for grey or (H, W, 3) for colour, display orientation
    window: tuple[float, float]  # (low, high): low -> 0, high -> 255, linear, clipped
    invert: bool = False  # MONOCHROME1: flip 0..255 after windowing
    kind: str = "raster"  # reader used: dicom | nifti | npy | raster
    units: str = ""  # "HU" for CT after the DICOM rescale, "" when unknown
    path: str = ""  # the file read (fragment removed)
    meta: dict[str, Any] = field(default_factory=dict)  # reader facts: modality, frames, shape, slice...

    @property
    def is_color(self) -> bool:
        return self.pixels.ndim == 3

    def to_uint8(self) -> np.ndarray:
        """The windowed image as uint8, (H, W) or (H, W, 3)."""
        out = np.empty(self.pixels.shape, dtype=np.uint8)
        rows = max(1, _WINDOW_BLOCK // max(1, int(np.prod(self.pixels.shape[1:]))))
        for start in range(0, self.pixels.shape[0], rows):  # row blocks: float64 temporaries stay small
            out[start : start + rows] = self._window_block(self.pixels[start : start + rows])
        return 255 - out if self.invert else out

    def _window_block(self, pixels: np.ndarray) -> np.ndarray:
        low, high = self.window
        if high > low:
            scaled = (pixels.astype(np.float64) - low) * (255.0 / (high - low))
        else:  # a constant image (or degenerate window): everything above it is white
            scaled = np.where(pixels > low, 255.0, 0.0)
        return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)  # halves round up: -600 HU -> 128 (lung)

    def to_pil(self) -> Image.Image:
        """The windowed image as an 8-bit RGB PIL image (grey is replicated to three channels)."""
        array = self.to_uint8()
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def choose_window(
    pixels: np.ndarray,
    choice: Any,
    options: dict[str, Any],
    path: str,
    file_window: tuple[float, float] | None = None,
    full_range: tuple[float, float] | None = None,
    auto: str = "minmax",
) -> tuple[float, float]:
    """The (low, high) window for ``choice`` (a (centre, width) pair or a mode name)."""
    if choice == "auto":
        choice = auto
    if isinstance(choice, tuple):
        centre, width = choice
        return centre - width / 2.0, centre + width / 2.0
    if choice == "file":
        if file_window is None:
            raise DataError(
                f"{path}: window=file but the file has no WindowCenter/WindowWidth; "
                "use a preset, CENTRE,WIDTH, minmax or percentile"
            )
        return choose_window(pixels, file_window, options, path)
    if choice == "full":
        if full_range is None:
            raise DataError(f"{path}: window=full needs integer pixel data; use minmax or percentile")
        return full_range
    finite = pixels[np.isfinite(pixels)]
    if finite.size == 0:
        raise DataError(f"{path}: the image holds no finite values")
    if choice == "percentile":
        low, high = np.percentile(finite, options.get("percentile", DEFAULT_PERCENTILES))
        return float(low), float(high)
    return float(finite.min()), float(finite.max())  # minmax


def integer_range(dtype: np.dtype) -> tuple[float, float] | None:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype == np.bool_:
        return 0.0, 1.0
    return None
