"""Shared helpers of the trainer tests: a stand-in packed-batch loader and a debug checkpoint.

``StandInLoader`` follows the data loader's contract (``build_loader(data_cfg, model_cfg,
tokenizer, rank, world_size, state)``; infinite iterable of PackedBatch; ``state_dict()``
continues the identical stream, as does ``load_state_dict()``; ``has_generation_data()`` / ``has_understanding_data()``). Its
options come from the data-mix YAML under the key ``standin``:
``{kinds: [und, gen, edit], samples: 2, delay: 0.0, image: 32}``. Rank r of w gets elements
r, r + w, r + 2w, ... of one global stream, so 1 process x k accumulation steps sees the same
global batches as k processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml

from unimedvl.config import load_yaml
from unimedvl.models.packed_batch import TextSplit, VaeImageSplit, VitImageSplit, build_packed_batch

KINDS = ("und", "gen", "edit")


def _image(g: torch.Generator, side: int) -> torch.Tensor:
    return torch.rand(3, side, side, generator=g) * 2 - 1


def make_sample(kind: str, g: torch.Generator, vocab: int, side: int):
    def ids(n):
        return torch.randint(10, vocab, (n,), generator=g).tolist()

    vit_side = side // 14 * 14
    if kind == "und":
        img = _image(g, vit_side)
        return [VitImageSplit(img), TextSplit(ids(5)), TextSplit(ids(4), loss=True)]
    if kind == "gen":
        return [TextSplit(ids(6)), VaeImageSplit(image=_image(g, side), noised=True)]
    if kind == "edit":
        src, tgt = _image(g, side), _image(g, side)
        return [
            VaeImageSplit(image=src),
            VitImageSplit(src[:, :vit_side, :vit_side]),
            TextSplit(ids(4)),
            TextSplit(ids(3), loss=True),
            VaeImageSplit(image=tgt, noised=True),
        ]
    if kind == "text":
        return [TextSplit(ids(4)), TextSplit(ids(6), loss=True)]
    raise ValueError(kind)


class StandInLoader:
    def __init__(self, data_cfg, model_cfg, tokenizer, rank=0, world_size=1, state=None):
        options = load_yaml(data_cfg.dataset_config_file).get("standin", {})  # the real loader's clear errors
        self.kinds = list(options.get("kinds", KINDS))
        self.samples = int(options.get("samples", 2))
        self.delay = float(options.get("delay", 0.0))
        self.side = int(options.get("image", 32))
        self.seed = data_cfg.seed
        self.rank, self.world = rank, world_size
        self.model_cfg, self.special = model_cfg, tokenizer.special
        self.next = int(state["next"]) if state else 0
        self.stats = {"batches": 0}

    def batch(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        kinds = [self.kinds[(index + j) % len(self.kinds)] for j in range(self.samples)]
        vocab = min(self.model_cfg.llm.vocab_size, 200)
        samples = [make_sample(k, g, vocab, self.side) for k in kinds]
        return build_packed_batch(samples, self.special, self.model_cfg, kinds=kinds)

    def __iter__(self):
        while True:
            if self.delay:
                time.sleep(self.delay)
            b = self.batch(self.next * self.world + self.rank)
            self.next += 1
            self.stats["batches"] += 1
            yield b

    def state_dict(self):
        return {"next": self.next}

    def load_state_dict(self, state):
        self.next = int(state["next"])

    def has_generation_data(self):
        return any(k in ("gen", "edit") for k in self.kinds)

    def has_understanding_data(self):
        return any(k in ("und", "edit", "text") for k in self.kinds)

    def image_transforms(self):
        return None, None  # the stand-in makes tensors directly: the checkpoint keeps its own sizes


def build_loader(data_cfg, model_cfg, tokenizer, rank=0, world_size=1, state=None):
    return StandInLoader(data_cfg, model_cfg, tokenizer, rank, world_size, state)


LOADER = "train_support:build_loader"


def write_mix(path: Path, **options) -> str:
    path.write_text(yaml.safe_dump({"standin": options}))
    return str(path)


def debug_checkpoint(out: Path, seed: int = 0) -> Path:
    from unimedvl.checkpoint.create import init_checkpoint

    if not (out / "ema.safetensors").is_file():
        init_checkpoint("debug", out, seed=seed)
    return out
