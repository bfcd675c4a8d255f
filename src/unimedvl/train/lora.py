"""LoRA for the linear layers of both experts and the ViT, without changing any checkpoint key.

A targeted ``nn.Linear`` becomes a ``LoRALinear`` in place: it keeps ``weight`` and ``bias``
(frozen) and gains ``lora_A`` (r, in) and ``lora_B`` (out, r); the output is
``x W^T + b + (alpha / r) * dropout(x) A^T B^T``. ``B`` starts at zero, so a fresh adapter
changes nothing. Because base names are unchanged, release weights load as they are, and
``merge_lora_state`` folds adapters into plain weights for the release layout.

Parts (:data:`PARTS`): the understanding expert (``und``: Linear layers of the language model
without the ``_moe_gen`` suffix, lm_head included), the generation expert (``gen``: those with it)
and the vision encoder (``vit``). Each part has its own rank, alpha and targets
(``lora_rank_und`` ...; None takes ``lora_rank`` / ``lora_alpha`` / ``lora_target_modules``, rank 0
leaves the part without LoRA), e.g. rank 64 for understanding and 256 for generation as HealthGPT
does. Default targets that match nothing in a part (``o_proj`` in the ViT, whose output
projection is ``out_proj``) are fine; targets given for one part that match nothing there are a
ConfigError. With a quantised base (``train/qlora.py``) the base ``weight`` is an int8 or NF4
tensor and the frozen product runs through :func:`~unimedvl.train.qlora.quantized_linear`.

Why not peft: peft wraps the model (``base_model.model.*`` and ``base_layer`` key names), which
would break the release key names that checkpoint/release.py and FSDP per-layer sharding rely on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.errors import ConfigError
from unimedvl.train.qlora import is_quantized, quantized_linear

GEN_SUFFIX = "_moe_gen"
PARTS = ("und", "gen", "vit")


class LoRALinear(nn.Linear):
    """nn.Linear plus a low-rank update; created by ``inject_lora`` from an existing Linear."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    lora_scale: float
    lora_dropout: float

    def forward(self, x: Tensor) -> Tensor:
        """The frozen base layer's output plus the scaled low-rank update."""
        if is_quantized(self.weight):
            out = quantized_linear(x, self.weight, self.bias)
        else:
            out = F.linear(x, self.weight, self.bias)
        h = F.dropout(x, self.lora_dropout, self.training) if self.lora_dropout else x
        return out + F.linear(F.linear(h, self.lora_A.to(h.dtype)), self.lora_B.to(h.dtype)) * self.lora_scale

    @torch.no_grad()
    def reset_lora(self) -> None:
        """Fresh adapters: A random, B zero, so the layer starts equal to its base."""
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


def _part_modules(model: nn.Module, part: str) -> list[tuple[str, nn.Module]]:
    """(full name, module) of the plain Linear layers of one part (see the module docstring)."""
    if part == "vit":
        root, prefix = getattr(model, "vit_model", None), "vit_model."
    else:
        root, prefix = model.language_model, "language_model."
    if root is None:
        return []
    out = []
    for name, module in root.named_modules():
        if type(module) is not nn.Linear:
            continue
        if part != "vit" and name.endswith(GEN_SUFFIX) != (part == "gen"):
            continue
        out.append((prefix + name, module))
    return out


def _make_lora(module: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
    weight = module.weight
    like = dict(device=weight.device, dtype=weight.dtype if weight.is_floating_point() else torch.float32)
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


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    dropout: float = 0.0,
    parts: Sequence[str] = ("und", "gen"),
    strict: bool = True,
) -> list[str]:
    """Turn the targeted Linear layers of ``parts`` into LoRALinear; returns their names.

    ``targets`` are last name components (``q_proj`` covers both experts; ``q_proj_moe_gen`` only
    the generation expert) or dotted patterns. Base weights are frozen; adapters are the trainable
    part. ``strict``: a ConfigError when nothing matched.
    """
    names = []
    for part in parts:
        for name, module in _part_modules(model, part):
            local = name.split(".", 1)[1]
            if _matches(local, targets):
                _make_lora(module, rank, alpha, dropout)
                names.append(name)
    if not names and strict:
        where = "the language model" if set(parts) <= {"und", "gen"} else f"part(s) {', '.join(parts)}"
        raise ConfigError(
            f"lora_target_modules={list(targets)} matched no Linear layer of {where}; use names like "
            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (add _moe_gen for one expert; "
            "the ViT has q_proj, k_proj, v_proj, out_proj, fc1, fc2)"
        )
    return names


def part_settings(cfg) -> dict[str, tuple[int, float, list[str], bool]]:
    """Part -> (rank, alpha, targets, targets given for this part) from a TrainConfig's lora_* fields."""
    out = {}
    for part in PARTS:
        rank = getattr(cfg, f"lora_rank_{part}")
        alpha = getattr(cfg, f"lora_alpha_{part}")
        targets = getattr(cfg, f"lora_targets_{part}")
        out[part] = (
            cfg.lora_rank if rank is None else rank,
            cfg.lora_alpha if alpha is None else alpha,
            list(cfg.lora_target_modules if targets is None else targets),
            targets is not None,
        )
    return out


def lora_enabled(cfg) -> bool:
    """True when some part gets LoRA (a rank > 0 there)."""
    return any(rank > 0 for rank, *_ in part_settings(cfg).values())


def check_lora_config(cfg) -> None:
    """One-line ConfigErrors for the per-part LoRA fields and ``quantize_base`` (no model needed)."""
    for part in PARTS:
        for kind, types in (("rank", (int,)), ("alpha", (int, float)), ("targets", (list,))):
            key = f"lora_{kind}_{part}"
            value = getattr(cfg, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, types):
                raise ConfigError(
                    f"{key} must be {'an integer' if kind == 'rank' else 'a number' if kind == 'alpha' else 'a list of Linear names'} "
                    f"or None, got {value!r}"
                )
            if kind == "alpha":
                setattr(cfg, key, float(value))
            if kind == "rank" and value < 0:
                raise ConfigError(f"{key} must be >= 0 (0: no LoRA in that part), got {value}")
    for part, (rank, _alpha, targets, _) in part_settings(cfg).items():
        if rank > 0 and not targets:
            raise ConfigError(f"lora_rank_{part}={rank} needs targets: set lora_targets_{part} or lora_target_modules")
    if cfg.quantize_base != "none" and not lora_enabled(cfg):
        raise ConfigError(
            f"--quantize_base {cfg.quantize_base} needs LoRA: add --lora_rank N (e.g. 64); a quantised base is "
            "frozen, so only adapters could train"
        )


def inject_lora_parts(model: nn.Module, cfg) -> dict[str, list[str]]:
    """LoRA on every part with a rank > 0 (settings from ``cfg``, a TrainConfig); part -> module names."""
    settings = part_settings(cfg)
    found: dict[str, list[str]] = {}
    for part, (rank, alpha, targets, explicit) in settings.items():
        if rank <= 0 or (part == "vit" and not hasattr(model, "vit_model")):
            continue
        found[part] = inject_lora(model, rank, alpha, targets, cfg.lora_dropout, parts=(part,), strict=False)
        if explicit and not found[part]:
            raise ConfigError(
                f"lora_targets_{part}={targets} matched no Linear layer of the {part} part; "
                f"its Linear names: {', '.join(_local_names(model, part)) or 'none'}"
            )
    if not any(found.values()):
        raise ConfigError(
            f"lora_target_modules={list(cfg.lora_target_modules)} matched no Linear layer of the model; use names "
            "like q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj (add _moe_gen for one expert; "
            "the ViT has q_proj, k_proj, v_proj, out_proj, fc1, fc2)"
        )
    return found


def _local_names(model: nn.Module, part: str) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, _ in _part_modules(model, part)})


def reset_lora(model: nn.Module, seed: int = 0) -> None:
    """Fresh adapters (A uniform +-1/sqrt(in), B zero) after ``to_empty``, identical for every world size.

    Each full A is drawn from a generator seeded by (seed, layer index) and then sharded, so a
    sharded run starts from exactly the adapters of a one-process run.
    """
    from unimedvl.train.parallel import _copy_into

    for index, (_name, module) in enumerate(n_m for n_m in model.named_modules() if isinstance(n_m[1], LoRALinear)):
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
