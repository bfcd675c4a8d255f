"""Image resizing/normalisation for the VAE and ViT paths (patchify lives with the model: models/embeddings.py),
and every other resize in the project (section "Resizing" at the end).

Resize rule ``release`` (the default: the rule the released weights were trained and evaluated
with, reproduced exactly), for an image of ``w x h``:

1. ``scale = min(max_image_size / long edge, 1)`` (shrink to fit the long edge, never enlarge);
2. ``scale = max(scale, min_image_size / short edge)`` (then the short-edge minimum wins: small
   images are enlarged);
3. each side ``* scale`` is rounded to whole pixels, then to the nearest multiple of
   ``image_stride`` (Python's ``round``: an exact half goes to the even multiple), at least one stride;
4. if ``max_pixels`` is set and the area is above it, both sides are scaled by
   ``max_pixels / area`` (the ratio itself, not its square root: the release shrinks such images
   far below the cap) and rounded as in 3;
5. if the long edge is still above ``max_image_size`` (a very elongated image enlarged in 2), both
   sides are scaled so it equals ``max_image_size`` and rounded as in 3 (the short edge may then
   fall below ``min_image_size``);
6. resample bicubically, and map 0..255 to ``[-1, 1]`` (``x / 127.5 - 1``).

Rule ``strict`` (``resize_rule: strict``; this project's earlier rule, kept for checkpoints trained
with it): scale so the long edge is ``<= max_image_size`` and the short edge ``>= min_image_size``
(the long edge wins), scale to the area ``max_pixels`` by the square root of the ratio, round to the
stride never above ``max_image_size`` and shrink a stride at a time while the area exceeds
``max_pixels``: no limit is ever exceeded and no image is shrunk more than needed. The two rules
agree on most sizes; they differ by one stride on one side for a few percent of sizes (4-7% in random
draws), and on images above ``max_pixels``.

The YAML mix gives these as ``image_transform_args`` (VAE: stride 16, max 1024, min 512) and
``vit_image_transform_args`` (ViT: stride 14, max 980, min 378, max_pixels 2,007,040).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from unimedvl.config import from_dict
from unimedvl.errors import ConfigError

if TYPE_CHECKING:
    import torch


RESIZE_RULES = ("release", "strict")


@dataclass(frozen=True)
class ImageTransform:
    """Resize to the stride grid within the size limits, then normalise to a [3, H, W] tensor."""

    image_stride: int  # output sides are multiples of this (16 for the VAE, 14 for the ViT)
    max_image_size: int  # upper bound on the long edge, in pixels
    min_image_size: int  # lower bound on the short edge, in pixels (yields to max_image_size)
    max_pixels: int | None = None  # optional upper bound on H * W
    resize_rule: str = "release"  # release (the released weights' rule, exact) | strict (never exceeds a limit)

    def __post_init__(self) -> None:
        if self.resize_rule not in RESIZE_RULES:
            raise ConfigError(f"resize_rule={self.resize_rule!r}; choose one of {', '.join(RESIZE_RULES)}")
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
    def from_config(cls, args: Mapping[str, Any], source: str = "image_transform_args") -> ImageTransform:
        """Build from a YAML dict such as ``image_transform_args``; unknown keys raise ConfigError."""
        try:
            return from_dict(cls, dict(args) if isinstance(args, Mapping) else args, source=source)
        except ConfigError:
            raise
        except TypeError as err:  # a required key is missing
            missing = [k for k in ("image_stride", "max_image_size", "min_image_size") if k not in args]
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing) or '?'} ({err})") from None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(new_width, new_height) this transform gives an image of ``width x height`` (module docstring)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if self.resize_rule == "strict":
            return self._strict_size(width, height)
        return self._release_size(width, height)

    def _snap(self, value: float) -> int:
        # Whole pixels first, then the nearest stride multiple; Python's round takes an exact half to even.
        stride = self.image_stride
        return max(stride, int(round(round(value) / stride) * stride))

    def _release_size(self, width: int, height: int) -> tuple[int, int]:
        scale = min(self.max_image_size / max(width, height), 1.0)
        scale = max(scale, self.min_image_size / min(width, height))
        new_w, new_h = self._snap(width * scale), self._snap(height * scale)
        if self.max_pixels is not None and new_w * new_h > self.max_pixels:
            scale = self.max_pixels / (new_w * new_h)
            new_w, new_h = self._snap(new_w * scale), self._snap(new_h * scale)
        if max(new_w, new_h) > self.max_image_size:
            scale = self.max_image_size / max(new_w, new_h)
            new_w, new_h = self._snap(new_w * scale), self._snap(new_h * scale)
        return new_w, new_h

    def _strict_size(self, width: int, height: int) -> tuple[int, int]:
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
        return resize(image, self.target_size(*image.size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """Resized image as a float32 tensor [3, H, W] in [-1, 1]."""
        return to_tensor(self.resize(image))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as float32 [3, H, W] in [-1, 1] (no resizing)."""
    import torch  # here, not at the top: the CLI reads ImageTransform's defaults without loading torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()


def to_pil(tensor: torch.Tensor, rounding: str = "nearest") -> Image.Image:
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


# ---------------------------------------------------------------------------------------------
# Resizing. Every resize of the project is one of these; they differ on purpose, by job:
#
#   resize / resize_array, bicubic   model inputs (VAE and ViT above), autoencoder training images,
#                                    the bicubic baseline of an edit, the reference-mode metrics (the
#                                    published protocol resizes the ground truth with PIL bicubic)
#   down_up                          MedSynth's low-resolution inputs: bicubic down and back up (PIL,
#                                    uint8), the usual super-resolution degradation
#   resize_array, lanczos            the real-image set's clean targets, downsized from large photos
#                                    (the sharpest of PIL's filters for a one-off downsizing)
#   resize, box                      MedSynth drawings made at a multiple of the size and averaged down
#                                    (each output pixel the mean of its block: anti-aliased edges)
#   thumbnail                        pictures for people (report cards, the app's chat): aspect kept
#   resize_tensor                    feature extractors' input size (FID): torch, antialiased bilinear,
#                                    on the batch where it already is (CPU or GPU)
#   blur_down_up                     the autoencoder's trivial baseline on training batches: torch,
#                                    area down (block mean) then bicubic back up, clamped to [-1, 1]
#
# Decoding may also reduce a large raster image by an integer factor before the resize follows
# (medical_io's ``reduce_to``, PIL's two-step rule): part of reading, not a resize rule.

RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


def resize(image: Image.Image, size: tuple[int, int], method: str = "bicubic") -> Image.Image:
    """``image`` resampled to ``size`` = (width, height) by ``method`` (a :data:`RESAMPLING` key);
    the image itself when it already has that size."""
    size = (int(size[0]), int(size[1]))
    return image if image.size == size else image.resize(size, RESAMPLING[method])


def resize_array(array: np.ndarray, size: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """An (H, W) or (H, W, C) array resampled to ``size`` = (width, height) through PIL; the array
    itself when it already has that size. uint8 stays uint8 (PIL resamples and rounds it, as the
    reference metrics do); any other dtype is resampled per channel in float32 and returned as float64."""
    width, height = int(size[0]), int(size[1])
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8:
        return np.asarray(resize(Image.fromarray(array), (width, height), method))
    channels = array[..., None] if array.ndim == 2 else array
    out = [
        np.asarray(resize(Image.fromarray(channels[..., c].astype(np.float32)), (width, height), method))
        for c in range(channels.shape[-1])
    ]
    res = np.stack(out, axis=-1).astype(np.float64)
    return res[..., 0] if array.ndim == 2 else res


def down_up(array: np.ndarray, factor: int) -> np.ndarray:
    """A uint8 image bicubically downsampled by ``factor`` (each side at least 1 px) and upsampled back."""
    height, width = array.shape[:2]
    small = resize(Image.fromarray(array), (max(width // factor, 1), max(height // factor, 1)))
    return np.asarray(resize(small, (width, height)))


def thumbnail(image: Image.Image, max_side: int) -> Image.Image:
    """A copy of ``image`` that fits in ``max_side`` x ``max_side``, aspect ratio kept, never enlarged
    (PIL's ``thumbnail``: a cheap reduction first, then bicubic)."""
    small = image.copy()
    small.thumbnail((max_side, max_side))
    return small


def resize_tensor(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) float images to ``size`` = (height, width), antialiased bilinear (no corner alignment)."""
    import torch.nn.functional as F

    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def blur_down_up(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] area-downsampled by ``factor`` and bicubically upsampled back."""
    import torch.nn.functional as F

    small = F.interpolate(images, scale_factor=1 / factor, mode="area")
    return F.interpolate(small, size=images.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
