"""Helpers shared by the inference tests: sizes, random images, the perturbed debug checkpoint."""

import numpy as np
import torch
from PIL import Image

from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.checkpoint.release import load_model, save_model
from unimedvl.tokenizer import Tokenizer

STEPS = 4  # denoising steps in every generation test
SMALL = dict(vae_min_size=32, vae_max_size=64, vit_min_size=56)  # image size rules: tiny and fast


def random_image(h, w, seed):
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


def make_checkpoint(path):
    """The debug checkpoint with a non-zero velocity head and distinct experts."""
    init_checkpoint("debug", path, seed=0)
    # A fresh model predicts zero velocity (llm2vae is zero-initialised): give it weights so that
    # guidance, seeds and batching have something to change.
    model = load_model(path)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.llm2vae.weight.copy_(torch.randn(model.llm2vae.weight.shape, generator=g) * 0.05)
        for name, p in model.language_model.named_parameters():
            if "_moe_gen" in name and p.dim() == 2:  # experts differ, so routing matters
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_model(model, path, Tokenizer.from_dir(path))
    return path
