"""LoRA for the language model's linear layers, without changing any checkpoint key.

A targeted ``nn.Linear`` becomes a ``LoRALinear`` in place: it keeps ``weight`` and ``bias``
(frozen) and gains ``lora_A`` (r, in) and ``lora_B`` (out, r); the output is
``x W^T + b + (alpha / r) * dropout(x) A^T B^T``. ``B`` starts at zero, so a fresh adapter
changes nothing. Because base names are unchanged, release weights load as they are, and
``merge_lora_state`` folds adapters into plain weights for the release layout.

Why not peft: peft wraps the model (``base_model.model.*`` and ``base_layer`` key names), which
would break the release key names that checkpoint.py and FSDP per-layer sharding rely on.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.errors import ConfigError

GEN_SUFFIX = "_moe_gen"


class LoRALinear(nn.Linear):
    """nn.Linear plus a low-rank update; created by ``inject_lora`` from an existing Linear."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_scale: float
    lora_dropout: float

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        h = F.dropout(x, self.lora_dropout, self.training) if self.lora_dropout else x
        return out + F.linear(F.linear(h, self.lora_A.to(h.dtype)), self.lora_B.to(h.dtype)) * self.lora_scale

    @torch.no_grad()
    def reset_lora(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)


def _matches(name: str, targets: Sequence[str]) -> bool:
    last = name.rsplit(".", 1)[-1]
    base = last[: -len(GEN_SUFFIX)] if last.endswith(GEN_SUFFIX) else last
    for target in targets:
        if target in (last, base):
            return True
        if "." in target and re.fullmatch(target.replace(".", r"\.").replace("*", ".*"), name):
            return True  # a dotted pattern such as layers.*.self_attn.q_proj
    return False


def inject_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str], dropout: float = 0.0) -> list[str]:
    """Turn the targeted Linear layers of ``model.language_model`` into LoRALinear; returns their names.

    ``targets`` are last name components (``q_proj`` covers both experts; ``q_proj_moe_gen`` only
    the generation expert). Base weights are frozen; adapters are the trainable part.
    """
    names = []
    for name, module in model.language_model.named_modules():
        if type(module) is nn.Linear and _matches(name, targets):
            weight = module.weight
            like = dict(device=weight.device, dtype=weight.dtype)
            module.__class__ = LoRALinear
            module.lora_A = nn.Parameter(torch.empty(rank, module.in_features, **like))
            module.lora_B = nn.Parameter(torch.empty(module.out_features, rank, **like))
            module.lora_scale = alpha / rank
            module.lora_dropout = dropout
            module.weight.requires_grad_(False)
            if module.bias is not None:
                module.bias.requires_grad_(False)
            if not weight.is_meta:
                module.reset_lora()
            names.append("language_model." + name)
    if not names:
        raise ConfigError(
            f"lora_target_modules={list(targets)} matched no Linear layer of the language model; use names like "
            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (add _moe_gen for one expert)"
        )
    return names


def reset_lora(model: nn.Module, seed: int = 0) -> None:
    """Fresh adapters (A uniform +-1/sqrt(in), B zero) after ``to_empty``, identical for every world size.

    Each full A is drawn from a generator seeded by (seed, layer index) and then sharded, so a
    sharded run starts from exactly the adapters of a one-process run.
    """
    from unimedvl.train.parallel import _copy_into

    for index, (name, module) in enumerate(n_m for n_m in model.named_modules() if isinstance(n_m[1], LoRALinear)):
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        bound = 1.0 / math.sqrt(module.in_features)  # what kaiming_uniform_(a=sqrt(5)) gives
        full_a = (torch.rand(module.lora_A.shape, generator=g) * 2 - 1) * bound
        _copy_into(module.lora_A, full_a)
        _copy_into(module.lora_B, torch.zeros(module.lora_B.shape))


def lora_scales(model: nn.Module) -> dict[str, float]:
    """Module name -> alpha / r of every LoRALinear."""
    return {name: m.lora_scale for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora_state(state: Mapping[str, Tensor], scales: Mapping[str, float]) -> dict[str, Tensor]:
    """A state dict with every adapter folded into its weight (W + scale * B A) and adapter keys removed."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for name, scale in scales.items():
        a, b = state.get(f"{name}.lora_A"), state.get(f"{name}.lora_B")
        if a is None or b is None:
            continue
        weight = out[f"{name}.weight"]
        out[f"{name}.weight"] = (weight.float() + scale * (b.float() @ a.float())).to(weight.dtype)
    return out
