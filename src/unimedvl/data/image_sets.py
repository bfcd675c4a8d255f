"""Image sets for training an autoencoder: find the images, load them at a size, draw crop batches.

Images come from folders (searched recursively), files, glob patterns and the ``input_img`` /
``output_img`` of JSONL records; they are held in memory as uint8 and batched as random crops.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unimedvl.errors import DataError
from unimedvl.imaging.formats import IMAGE_SUFFIXES, has_image_suffix


def collect_image_paths(images: Sequence[str] = (), data: Sequence[str] = (), data_dir: str | None = None) -> list[str]:
    """Every image named by ``images`` (folders, files, globs) and by the JSONL files ``data``, deduplicated.

    Folders are searched recursively for known image extensions; JSONL records contribute all
    their ``input_img`` and ``output_img`` paths (``#key=value`` options kept). Order is
    deterministic (sorted per folder / glob, then record order).
    """
    from unimedvl.data.records import read_jsonl

    found: list[str] = []
    for spec in images:
        if os.path.isdir(spec):
            hits = sorted(str(p) for p in Path(spec).rglob("*") if p.is_file() and has_image_suffix(p.name))
            if not hits:
                raise DataError(f"{spec}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        elif os.path.isfile(spec.split("#", 1)[0]) or os.path.isfile(spec):
            hits = [spec]
        elif glob.has_magic(spec):
            hits = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not hits:
                raise DataError(f"{spec}: the pattern matches no files")
        else:
            raise DataError(f"{spec}: no such file or folder (give image folders, files or glob patterns)")
        found.extend(hits)
    for jsonl in data:
        count = len(found)
        for record in read_jsonl(jsonl, data_dir):
            found.extend(ref.path for ref in record.images)
        if len(found) == count:
            raise DataError(f"{jsonl}: no record has input_img / output_img images")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError("no images found; check the images / data arguments")
    return unique


def load_training_image(path: str, size: int, resize: str, min_side: int) -> Tensor:
    """One image as uint8 (3, H, W): squashed to size x size, or with its short side raised to ``size``."""
    from unimedvl.imaging.medical_io import load_image
    from unimedvl.imaging.transforms import resize as resize_image  # not `resize`: the argument's name

    image = load_image(path)
    width, height = image.size
    if min(width, height) < min_side:
        raise DataError(
            f"{path}: image is {width}x{height} px, smaller than the VAE's {min_side}-px latent cell; "
            f"remove it from the training set"
        )
    if resize == "resize":
        target = (size, size)
    else:  # crop: keep the native scale unless a side is shorter than a crop
        scale = max(1.0, size / min(width, height))
        target = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = resize_image(image, target)  # bicubic; unchanged when already at the target
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def to_unit(batch: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [-1, 1]."""
    return batch.float().div_(127.5).sub_(1.0)


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` window of a (C, H, W) image."""
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[:, top : top + size, left : left + size]


class CropBatches:
    """Random batches of random crops (and flips) from images held in memory as uint8."""

    def __init__(self, images: list[Tensor], size: int, batch_size: int, flip: bool, generator: torch.Generator):
        self.images, self.size, self.batch_size, self.flip, self.gen = images, size, batch_size, flip, generator
        self.order: list[int] = []

    def next(self) -> Tensor:
        picks = []
        for _ in range(self.batch_size):
            if not self.order:  # a fresh permutation per epoch, so every image is seen once per epoch
                self.order = torch.randperm(len(self.images), generator=self.gen).tolist()
            image = self.images[self.order.pop()]
            height, width = image.shape[-2:]
            top = int(torch.randint(height - self.size + 1, (1,), generator=self.gen))
            left = int(torch.randint(width - self.size + 1, (1,), generator=self.gen))
            crop = image[:, top : top + self.size, left : left + self.size]
            if self.flip and bool(torch.rand((), generator=self.gen) < 0.5):
                crop = crop.flip(-1)
            picks.append(crop)
        return to_unit(torch.stack(picks))
