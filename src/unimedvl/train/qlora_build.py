"""The trainer's QLoRA model build: the quantised base loaded, fresh adapters, checkpointing, FSDP2.

Apart from :mod:`unimedvl.train.qlora` (the quantised tensors and their autograd) because it
strings together the LoRA layers (which use those tensors) and the parallel wrappers.
"""

from __future__ import annotations

import torch
from torch import nn

from unimedvl.train.lora import reset_lora
from unimedvl.train.parallel import apply_activation_checkpointing, apply_fsdp, reset_recomputed
from unimedvl.train.qlora import fsdp_ignored, load_quantized


def build_quantized(
    model: nn.Module,
    weights_dir,
    prefer: str,
    method: str,
    device: torch.device,
    dtype: torch.dtype,
    seed: int,
    checkpointing: bool,
    mesh=None,
    strategy: str = "FULL_SHARD",
):
    """The trainer's QLoRA build of ``model`` (meta, freezing and LoRA applied): load quantised, fresh
    adapters, then activation checkpointing and FSDP2 (the quantised base sharded, int8 kept whole)."""
    load_quantized(model, weights_dir, prefer, method, device, dtype)
    reset_recomputed(model)
    reset_lora(model, seed)
    if checkpointing:
        apply_activation_checkpointing(model)
    if mesh is not None:
        apply_fsdp(model, mesh, strategy, dtype, ignored=fsdp_ignored(model))
    return model
