"""Differentiable SSIM on torch tensors: the training loss of the trainer's SSIM term and of
``train-autoencoder`` (evaluation uses scikit-image's definition, ``eval.image_metrics.ssim``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """The normalised 1-D Gaussian of ``size`` taps (the 2-D window is its outer product)."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM per image of (B, C, H, W) tensors in [0, data_range] -> (B,).

    Gaussian window (separable, shrunk to the image for small images), valid region only,
    K1 = 0.01, K2 = 0.03.
    """
    channels = x.shape[1]
    size = min(window_size, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma, x.device, x.dtype)
    kernel_h = g.view(1, 1, 1, -1).expand(channels, 1, 1, size)
    kernel_v = g.view(1, 1, -1, 1).expand(channels, 1, size, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kernel_h, groups=channels), kernel_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)
