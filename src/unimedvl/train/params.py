"""Trainable parameters: freezing, components, optimizer groups and the learning-rate schedule.

Components (names accepted by ``--lr_mult NAME=MULT``; a parameter-name prefix works too, the
most specific match wins):

| component | parameters |
| --- | --- |
| ``llm`` | everything under ``language_model.`` |
| ``llm_und`` / ``llm_gen`` | the understanding / generation (``_moe_gen``) expert weights |
| ``embed`` / ``lm_head`` | token embedding / output head |
| ``vit`` | ``vit_model.`` |
| ``connector`` | ViT -> LLM MLP |
| ``time_embedder``, ``vae2llm``, ``llm2vae`` | generation-path adapters |
| ``vae`` | the VAE decoder (only trainable with ``--freeze_vae False`` and a pixel loss) |
| ``lora`` | LoRA adapters |

Norm weights and biases (and every 1-D parameter) never get weight decay.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from unimedvl.errors import ConfigError

COMPONENTS = {
    "llm": lambda n: n.startswith("language_model."),
    "llm_und": lambda n: n.startswith("language_model.model.layers.") and "_moe_gen" not in n,
    "llm_gen": lambda n: n.startswith("language_model.") and "_moe_gen" in n,
    "embed": lambda n: n.startswith("language_model.model.embed_tokens."),
    "lm_head": lambda n: n.startswith("language_model.lm_head."),
    "vit": lambda n: n.startswith("vit_model."),
    "connector": lambda n: n.startswith("connector."),
    "time_embedder": lambda n: n.startswith("time_embedder."),
    "vae2llm": lambda n: n.startswith("vae2llm."),
    "llm2vae": lambda n: n.startswith("llm2vae."),
    "vae": lambda n: n.startswith("vae."),
    "lora": lambda n: n.endswith((".lora_A", ".lora_B")),
}
# Specificity of the component names (higher wins); prefixes rank by their length + 100.
_RANK = {"llm": 1, "llm_und": 2, "llm_gen": 2, "embed": 3, "lm_head": 3, "lora": 10}


def apply_freezing(model: nn.Module, freeze_llm: bool, freeze_vit: bool, train_vae: bool) -> None:
    """Set requires_grad per the freeze flags; the VAE encoder is always frozen (targets come from it)."""
    model.language_model.requires_grad_(not freeze_llm)
    if hasattr(model, "vit_model"):
        model.vit_model.requires_grad_(not freeze_vit)
    if hasattr(model, "vae"):
        model.vae.requires_grad_(False)
        if train_vae:
            model.vae.decoder.requires_grad_(True)
    for name in ("latent_pos_embed", "vit_pos_embed"):
        if hasattr(model, name):
            getattr(model, name).requires_grad_(False)


@torch.no_grad()
def hold_frozen_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast every frozen floating parameter of the language model and the ViT to ``dtype`` (one process).

    Under autocast a frozen fp32 weight is cast for every matmul anyway; holding it in the compute
    dtype halves the base's memory (LoRA on a bf16 base). Trainable parameters keep fp32 masters.
    """
    if dtype == torch.float32:
        return
    cast: dict[int, nn.Parameter] = {}  # tied weights stay tied
    for part in (getattr(model, "language_model", None), getattr(model, "vit_model", None)):
        for module in part.modules() if part is not None else ():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                    if id(p) not in cast:
                        cast[id(p)] = nn.Parameter(p.to(dtype), requires_grad=False)
                    module._parameters[name] = cast[id(p)]


def no_decay(name: str, param: torch.Tensor) -> bool:
    """Whether ``param`` is exempt from weight decay (biases, norms, 1-D tensors)."""
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.rsplit(".", 2)[-2]


def lr_multiplier(name: str, lr_mult: dict[str, float]) -> float:
    """The learning-rate multiplier for parameter ``name``: the most specific matching key wins."""
    best, best_rank = 1.0, -1
    for key, mult in lr_mult.items():
        if key in COMPONENTS:
            hit, rank = COMPONENTS[key](name), _RANK.get(key, 5)
        else:
            hit, rank = name.startswith(key), 100 + len(key)
        if hit and rank > best_rank:
            best, best_rank = mult, rank
    return best


def check_lr_mult(lr_mult: dict[str, float], names: list[str]) -> None:
    """Reject an ``lr_mult`` key that matches no trainable parameter (a typo would do nothing)."""
    for key in lr_mult:
        if key not in COMPONENTS and not any(n.startswith(key) for n in names):
            raise ConfigError(
                f"lr_mult key {key!r} matches no trainable parameter; use a component ({', '.join(COMPONENTS)}) "
                "or a parameter-name prefix"
            )


def param_groups(model: nn.Module, lr: float, weight_decay: float, lr_mult: dict[str, float]) -> list[dict]:
    """AdamW groups keyed by (lr multiplier, weight decay); each group keeps ``lr_mult`` and ``names``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("nothing to train: every parameter is frozen (check the freeze_* flags)")
    check_lr_mult(lr_mult, [n for n, _ in named])
    groups: dict[tuple[float, float], dict] = {}
    for name, p in named:
        mult = lr_multiplier(name, lr_mult)
        wd = 0.0 if no_decay(name, p) else weight_decay
        group = groups.setdefault(
            (mult, wd), {"params": [], "names": [], "lr_mult": mult, "weight_decay": wd, "lr": lr * mult}
        )
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters with their decay and lr-multiplier groups."""
    groups = [
        {k: v for k, v in g.items() if k != "names"} for g in param_groups(model, cfg.lr, cfg.weight_decay, cfg.lr_mult)
    ]
    # foreach kernels work on plain tensors and FSDP2 DTensors alike.
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay
    )


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int, kind: str) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if kind == "constant":
        return lr
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float) -> None:
    """Set the scheduled learning rate, scaled by each group's multiplier."""
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_mult", 1.0)
