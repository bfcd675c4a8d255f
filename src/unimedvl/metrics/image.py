"""Paired image quality metrics (PSNR, SSIM, MS-SSIM) in two modes, and finite mean / std.

Modes (spec medical.md section 5):
- ``reference``: comparable with published numbers. Both images become uint8 RGB; when sizes
  differ the ground truth is resized (PIL bicubic) to the prediction's size; PSNR =
  20*log10(255/sqrt(MSE)); SSIM is the mean over the R, G, B channels of scikit-image's default
  SSIM (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, data_range 255).
- ``native``: at the ground truth's size and on its own intensity scale (e.g. HU for CT): the
  prediction is resized to the ground truth, ``data_range`` is that of the scale.
The mode is written next to the numbers (``metric_mode``) so the two are never mixed up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

from unimedvl.errors import ConfigError, DataError
from unimedvl.imaging.raw import read_stored
from unimedvl.imaging.transforms import resize_array

ImageLike = Image.Image | np.ndarray | str | os.PathLike
METRIC_MODES = ("reference", "native")


# ---------------------------------------------------------------------------------------------
# Aggregation


def mean_std_finite(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and population std (ddof=0) over the finite values; (None, None) if there are none.

    None, NaN and +-inf (a PSNR of identical images) are left out, as the reference does.
    """
    arr = np.array([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None, None
    return float(arr.mean()), float(arr.std())


# ---------------------------------------------------------------------------------------------
# Paired image metrics


def _load(img: ImageLike) -> Image.Image | np.ndarray:
    if isinstance(img, (str, os.PathLike)):
        path = Path(img)
        if not path.is_file():
            raise DataError(f"{path}: image file not found")
        return read_stored(path)  # as stored (raw grey levels), within the pixel limit
    if isinstance(img, (Image.Image, np.ndarray)):
        return img
    raise DataError(f"expected a PIL image, numpy array or path, got {type(img).__name__}")


def to_rgb_uint8(img: ImageLike) -> np.ndarray:
    """An image as an (H, W, 3) uint8 array (grayscale is replicated, alpha dropped)."""
    img = _load(img)
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise DataError(
                f"reference-mode metrics take uint8 images (0..255), got dtype {img.dtype}; "
                "convert to uint8, or use mode='native' with data_range for other scales"
            )
        img = Image.fromarray(img.squeeze(-1) if img.ndim == 3 and img.shape[-1] == 1 else img)
    return np.asarray(img.convert("RGB"))


def psnr(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    """PSNR in dB = 20*log10(data_range/sqrt(MSE)); +inf for identical images."""
    if pred.shape != gt.shape:
        raise DataError(f"psnr: shapes differ {pred.shape} vs {gt.shape}")
    mse = float(np.mean((pred.astype(np.float64) - gt.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 20.0 * math.log10(data_range / math.sqrt(mse))


def ssim(pred: np.ndarray, gt: np.ndarray, data_range: float, win_size: int = 7) -> float:
    """Mean SSIM with a uniform window (scikit-image's default); (H, W, C) averages channels.

    Local statistics use a ``win_size``^2 box filter (reflect padding), variances with the sample
    (N-1) normalisation, C1=(0.01 L)^2, C2=(0.03 L)^2; the border of (win_size-1)//2 pixels is
    left out of the mean.
    """
    if pred.shape != gt.shape:
        raise DataError(f"ssim: shapes differ {pred.shape} vs {gt.shape}")
    if min(pred.shape[:2]) < win_size:
        raise DataError(f"ssim: image {pred.shape[:2]} is smaller than the {win_size}px window")
    if pred.ndim == 3:
        return float(np.mean([ssim(pred[..., c], gt[..., c], data_range, win_size) for c in range(pred.shape[-1])]))
    x, y = pred.astype(np.float64), gt.astype(np.float64)
    n = win_size * win_size
    cov_norm = n / (n - 1)
    mx, my = uniform_filter(x, win_size), uniform_filter(y, win_size)
    vx = cov_norm * (uniform_filter(x * x, win_size) - mx * mx)
    vy = cov_norm * (uniform_filter(y * y, win_size) - my * my)
    vxy = cov_norm * (uniform_filter(x * y, win_size) - mx * my)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(smap[pad:-pad, pad:-pad].mean()) if pad else float(smap.mean())


def ms_ssim(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    """Multi-scale SSIM (5 scales, 11px Gaussian window, sigma 1.5) via pytorch-msssim."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    if pred.shape != gt.shape:
        raise DataError(f"ms_ssim: shapes differ {pred.shape} vs {gt.shape}")
    if min(pred.shape[:2]) <= 160:
        raise DataError(
            f"ms_ssim needs images larger than 160px a side (5 scales of an 11px "
            f"window); got {pred.shape[:2]}: report SSIM instead"
        )

    def to_t(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.float64))
        return (t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]).contiguous()

    return float(_ms_ssim(to_t(pred), to_t(gt), data_range=data_range))


def rescale_intensity(img: ImageLike, low: float, high: float) -> np.ndarray:
    """Map a uint8 image (0..255, gray or RGB -> gray) linearly onto [low, high], e.g. HU.

    Use it to bring a generated PNG back to the scale of a native ground truth that was
    windowed to [low, high] for display.
    """
    arr = to_rgb_uint8(img).astype(np.float64).mean(axis=-1)
    return low + (high - low) * arr / 255.0


def _native_array(img: ImageLike) -> np.ndarray:
    img = _load(img)
    return np.asarray(img) if isinstance(img, Image.Image) else img


def paired_image_metrics(
    pred: ImageLike,
    gt: ImageLike,
    *,
    mode: str = "reference",
    data_range: float | None = None,
    with_ms_ssim: bool = False,
) -> dict[str, Any]:
    """PSNR / SSIM (optionally MS-SSIM) of a prediction against its ground truth.

    Returns {"psnr", "ssim", ["ms_ssim"], "metric_mode", "data_range", "height", "width"}
    where height/width are the size the metrics were computed at.
    """
    if mode == "reference":
        if data_range not in (None, 255, 255.0):
            raise ConfigError(
                f"reference mode uses data_range 255 (got {data_range}); use mode='native' for another intensity scale"
            )
        p, g = to_rgb_uint8(pred), to_rgb_uint8(gt)
        g = resize_array(g, (p.shape[1], p.shape[0]))  # ground truth goes to the prediction's size (PIL bicubic)
        rng = 255.0
    elif mode == "native":
        p, g = _native_array(pred), _native_array(gt)
        if p.ndim != g.ndim or (p.ndim == 3 and p.shape[-1] != g.shape[-1]):
            raise DataError(
                f"native mode: channel layouts differ (pred {p.shape}, gt {g.shape}); "
                "bring the prediction to the ground truth's scale first "
                "(e.g. rescale_intensity)"
            )
        if data_range is None:
            if not np.issubdtype(g.dtype, np.integer):
                raise ConfigError("native mode on a float image needs data_range (e.g. the HU window width for CT)")
            info = np.iinfo(g.dtype)
            data_range = float(info.max) - float(info.min)
        rng = float(data_range)
        p = resize_array(p, (g.shape[1], g.shape[0])).astype(np.float64)  # prediction to the GT's size
        g = g.astype(np.float64)
    else:
        raise ConfigError(f"unknown metric mode {mode!r}; choose one of {METRIC_MODES}")
    out: dict[str, Any] = {"psnr": psnr(p, g, rng), "ssim": ssim(p, g, rng)}
    if with_ms_ssim:
        out["ms_ssim"] = ms_ssim(p, g, rng)
    out.update(metric_mode=mode, data_range=rng, height=int(g.shape[0]), width=int(g.shape[1]))
    return out
