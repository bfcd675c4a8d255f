"""The degradations MedSynth applies to a clean image: noise, blur, low resolution, motion ghosting.

uint8 in, uint8 out; grey (H, W) or RGB (H, W, 3). Each is a pure function of the image, its
parameters and the generator it is given, so a record's degraded input can be recomputed exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unimedvl.imaging.transforms import down_up  # noqa: F401 (a degradation of this module; one home for resizes)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[0, 1] floats to uint8, clipped and rounded to the nearest level."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _unit(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255.0


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise of std ``sigma`` (in [0, 1] intensity units)."""
    return to_uint8(_unit(img) + sigma * rng.standard_normal(img.shape))


def poisson_noise(img: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Photon-counting noise: intensity 1 corresponds to ``peak`` expected counts (lower = noisier)."""
    return to_uint8(rng.poisson(_unit(img) * peak) / peak)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur of ``sigma`` pixels (colour channels blurred separately)."""
    sig = (sigma, sigma, 0.0) if img.ndim == 3 else sigma
    return to_uint8(ndimage.gaussian_filter(_unit(img), sig, mode="reflect"))


def motion_ghosting(img: np.ndarray, rng: np.random.Generator, fraction: float, shift: float) -> np.ndarray:
    """Rigid motion during a Cartesian acquisition: a random ``fraction`` of phase-encode lines
    (k-space rows) is acquired with the object shifted by ``shift`` pixels, which ghosts the image
    along the phase-encode (vertical) direction."""
    x = _unit(img)
    if x.ndim == 3:
        return np.stack(
            [
                motion_ghosting(img[..., c], np.random.default_rng(rng.integers(2**31)), fraction, shift)
                for c in range(3)
            ],
            axis=-1,
        )
    h, w = x.shape
    k = np.fft.fft2(x)
    ang = rng.uniform(0, 2 * np.pi)
    dy, dx = shift * np.sin(ang), shift * np.cos(ang)
    ky, kx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    moved = rng.random(h) < fraction
    moved[np.abs(np.fft.fftfreq(h)) < 2.0 / h] = False  # the centre lines fix the contrast: keep them still
    phase = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    k = np.where(moved[:, None], k * phase, k)
    return to_uint8(np.abs(np.fft.ifft2(k)))
