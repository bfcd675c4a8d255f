"""Image resizing/normalisation for the VAE and ViT paths (patchify lives with the model: models/embeddings.py).

Resize rule (spec/unified-model.md section 5), for an image of ``w x h``:

1. scale so the long edge is ``<= max_image_size`` and the short edge ``>= min_image_size``
   (small images are enlarged). When both cannot hold (a very elongated image) the long-edge
   limit wins: exceeding it would overflow the position tables, a short edge below ``min`` only
   costs detail;
2. if ``max_pixels`` is set and the area is still larger, scale down to that area (this also
   wins over ``min_image_size``);
3. round each side to the nearest multiple of ``image_stride`` (at least one stride), never above
   ``max_image_size`` rounded down to the stride, and shrink the longer side a stride at a time
   while the area exceeds ``max_pixels``;
4. resample bicubically, and map 0..255 to ``[-1, 1]`` (``x / 127.5 - 1``).

The YAML mix gives these as ``image_transform_args`` (VAE: stride 16, max 1024, min 512) and
``vit_image_transform_args`` (ViT: stride 14, max 980, min 378, max_pixels 2,007,040).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from PIL import Image

from unimedvl.config import from_dict
from unimedvl.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ImageTransform:
    """Resize to the stride grid within the size limits, then normalise to a [3, H, W] tensor."""

    image_stride: int  # output sides are multiples of this (16 for the VAE, 14 for the ViT)
    max_image_size: int  # upper bound on the long edge, in pixels
    min_image_size: int  # lower bound on the short edge, in pixels (yields to max_image_size)
    max_pixels: int | None = None  # optional upper bound on H * W

    def __post_init__(self) -> None:
        for name in ("image_stride", "max_image_size", "min_image_size", "max_pixels"):
            value = getattr(self, name)
            if value is None and name == "max_pixels":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.min_image_size > self.max_image_size:
            raise ConfigError(
                f"min_image_size={self.min_image_size} is larger than max_image_size={self.max_image_size}; "
                "lower min_image_size or raise max_image_size"
            )
        if self.max_image_size < self.image_stride:
            raise ConfigError(
                f"max_image_size={self.max_image_size} is below one stride ({self.image_stride}); raise it"
            )
        if self.max_pixels is not None and self.max_pixels < self.image_stride**2:
            raise ConfigError(f"max_pixels={self.max_pixels} is below one stride squared ({self.image_stride**2})")

    @classmethod
    def from_config(cls, args: Mapping[str, Any], source: str = "image_transform_args") -> "ImageTransform":
        """Build from a YAML dict such as ``image_transform_args``; unknown keys raise ConfigError."""
        try:
            return from_dict(cls, dict(args) if isinstance(args, Mapping) else args, source=source)
        except ConfigError:
            raise
        except TypeError as err:  # a required key is missing
            missing = [k for k in ("image_stride", "max_image_size", "min_image_size") if k not in args]
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing) or '?'} ({err})") from None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(new_width, new_height) this transform gives an image of ``width x height``."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        long_edge, short_edge = max(width, height), min(width, height)
        scale = 1.0
        if long_edge > self.max_image_size:
            scale = self.max_image_size / long_edge
        if short_edge * scale < self.min_image_size:
            scale = min(self.min_image_size / short_edge, self.max_image_size / long_edge)
        if self.max_pixels is not None and width * height * scale * scale > self.max_pixels:
            scale = math.sqrt(self.max_pixels / (width * height))
        stride = self.image_stride
        cap = (self.max_image_size // stride) * stride
        new_w = min(cap, max(stride, round(width * scale / stride) * stride))
        new_h = min(cap, max(stride, round(height * scale / stride) * stride))
        while self.max_pixels is not None and new_w * new_h > self.max_pixels and max(new_w, new_h) > stride:
            if new_w >= new_h:
                new_w -= stride
            else:
                new_h -= stride
        return new_w, new_h

    def grid_size(self, width: int, height: int) -> tuple[int, int]:
        """(rows, cols) of stride-sized patches after the transform: what the position table must hold."""
        new_w, new_h = self.target_size(width, height)
        return new_h // self.image_stride, new_w // self.image_stride

    def resize(self, image: Image.Image) -> Image.Image:
        """The image in RGB at :meth:`target_size`, resampled bicubically."""
        image = image.convert("RGB")
        size = self.target_size(*image.size)
        return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)

    def __call__(self, image: Image.Image) -> "torch.Tensor":
        """Resized image as a float32 tensor [3, H, W] in [-1, 1]."""
        return to_tensor(self.resize(image))


def to_tensor(image: Image.Image) -> "torch.Tensor":
    """An RGB PIL image as float32 [3, H, W] in [-1, 1] (no resizing)."""
    import torch  # here, not at the top: the CLI reads ImageTransform's defaults without loading torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def to_pil(tensor: "torch.Tensor", rounding: str = "nearest") -> Image.Image:
    """Inverse of the normalisation: [3, H, W] in [-1, 1] -> RGB PIL via ``(x * 0.5 + 0.5) * 255``.

    ``rounding="nearest"`` inverts :func:`to_tensor` exactly (input images given as tensors);
    ``"truncate"`` is how the release code quantises decoded images (clamp to [0, 1], scale, cast),
    so generated images and their PSNR reproduce the reference's bit for bit.
    """
    import torch

    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"to_pil expects a [3, H, W] tensor, got shape {tuple(tensor.shape)}")
    unit = (tensor.detach().float().cpu() * 0.5 + 0.5).clamp(0, 1)
    if rounding == "truncate":
        pixels = (unit * 255.0).to(torch.uint8)
    elif rounding == "nearest":
        pixels = (unit * 255.0).round().to(torch.uint8)
    else:
        raise ValueError(f"rounding={rounding!r}; choose 'nearest' or 'truncate'")
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), mode="RGB")
