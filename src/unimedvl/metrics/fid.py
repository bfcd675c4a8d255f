"""FID between two image sets, with a pluggable feature extractor (no network downloads)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import linalg

from unimedvl.errors import ConfigError, DataError
from unimedvl.imaging.transforms import resize_tensor
from unimedvl.metrics.image import ImageLike, to_rgb_uint8


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise DataError(f"frechet_distance: feature sizes differ ({mu1.shape} vs {mu2.shape})")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise both covariances
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(
                f"frechet_distance: sqrtm has a large imaginary part "
                f"({np.abs(covmean.imag).max():.3g}); use more samples"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 feature vectors of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between two feature sets."""
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


@dataclass
class FeatureExtractor:
    """A module mapping (N, 3, H, W) float images in [0, 1] to (N, D) features, with its name.

    input_size (H, W) resizes images (bilinear) before the module; None keeps them as they are.
    metric is the name the FID gets in outputs ("fid" for a loaded extractor).
    """

    name: str
    module: Callable[..., Any]
    input_size: tuple[int, int] | None = None
    metric: str = "fid"

    def __call__(self, batch: torch.Tensor) -> np.ndarray:  # noqa: F821
        import torch

        if self.input_size is not None and tuple(batch.shape[-2:]) != tuple(self.input_size):
            batch = resize_tensor(batch, self.input_size)
        with torch.no_grad():
            out = self.module(batch)
        out = out[0] if isinstance(out, (tuple, list)) else out
        return out.reshape(out.shape[0], -1).double().cpu().numpy()


class _PixelStats:
    """Not a learned feature: a 4x4 colour thumbnail plus per-channel mean and std (54 dims)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # noqa: F821
        import torch
        import torch.nn.functional as F

        thumb = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return torch.cat([thumb, x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def pixelstats_extractor() -> FeatureExtractor:
    """The built-in toy extractor; its score is labelled "fid_pixelstats", never plain FID."""
    return FeatureExtractor(name="pixelstats-4x4", module=_PixelStats(), metric="fid_pixelstats")


def load_feature_extractor(
    path: str | os.PathLike,
    module_spec: str | None = None,
    input_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> FeatureExtractor:
    """Load a FID feature extractor from a local file (never downloaded).

    A TorchScript file (.pt / .pth / .ts) or a torch.export program (.pt2) is loaded as is (give
    the .pt2 a dynamic batch dimension, or use batch_size=1). A .safetensors file needs
    module_spec "package.module:factory" (a class or function returning the nn.Module) whose
    state dict it fills strictly. The recorded name is ``name`` or "<file name>@<sha256[:12]>".
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{p}: feature extractor file not found (FID weights are never "
            "downloaded; give a local TorchScript or safetensors file)"
        )
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    if p.suffix == ".safetensors":
        if not module_spec or ":" not in module_spec:
            raise ConfigError(
                f"{p}: a safetensors extractor needs module_spec 'package.module:factory' naming the module to build"
            )
        import importlib

        from safetensors.torch import load_file

        mod_name, attr = module_spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"module_spec {module_spec!r}: {e}") from e
        module = factory()
        try:
            module.load_state_dict(load_file(str(p)), strict=True)
        except RuntimeError as e:
            raise ConfigError(f"{p}: weights do not fit {module_spec}: {e}") from e
    elif p.suffix == ".pt2":  # torch.export.save of an ExportedProgram
        module = torch.export.load(str(p)).module()
    else:
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except RuntimeError as e:
            raise ConfigError(
                f"{p}: not a TorchScript file ({e}); for a state dict use .safetensors with module_spec"
            ) from e
    if p.suffix != ".pt2":  # exported programs are already in inference form and refuse eval()
        module.eval()
    return FeatureExtractor(name=name or f"{p.name}@{digest}", module=module, input_size=input_size)


def _image_tensor(img: ImageLike) -> torch.Tensor:  # noqa: F821
    import torch

    return torch.from_numpy(to_rgb_uint8(img).copy()).permute(2, 0, 1).float() / 255.0


def _resize_tensor(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # noqa: F821
    """Resize one (3, H, W) image to size with antialiased bilinear interpolation."""
    return resize_tensor(t[None], size)[0]


def extract_features(images: Sequence[ImageLike], extractor: FeatureExtractor, batch_size: int = 32) -> np.ndarray:
    """(N, D) features of uint8 images; images of different sizes go through one at a time."""
    import torch

    feats, batch = [], []

    def flush() -> None:
        if batch:
            feats.append(extractor(torch.stack(batch)))
            batch.clear()

    for img in images:
        t = _image_tensor(img)
        if extractor.input_size is not None:
            t = _resize_tensor(t, extractor.input_size)
        if batch and (batch[0].shape != t.shape or len(batch) == batch_size):
            flush()
        batch.append(t)
    flush()
    if not feats:
        raise DataError("extract_features: no images")
    return np.concatenate(feats)


def compute_fid(
    images_a: Sequence[ImageLike], images_b: Sequence[ImageLike], extractor: FeatureExtractor | None = None
) -> dict[str, Any]:
    """FID-style distance between two image sets, labelled with the extractor that made it.

    Returns {"metric", "value", "feature_extractor", "num_a", "num_b"}; with no extractor the
    built-in pixel statistics are used and metric is "fid_pixelstats" (not standard FID).
    """
    ext = extractor or pixelstats_extractor()
    fa, fb = extract_features(images_a, ext), extract_features(images_b, ext)
    return {
        "metric": ext.metric,
        "value": fid_from_features(fa, fb),
        "feature_extractor": ext.name,
        "num_a": len(fa),
        "num_b": len(fb),
    }
