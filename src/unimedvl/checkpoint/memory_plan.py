"""Memory plans: which parts of a checkpoint are loaded, in which precision and where.

A :class:`LoadPlan` is what ``UniMedVL.from_pretrained(components=, quantize=, offload=,
device_map=)`` and the ``--components / --quantize / --offload / --device-map`` flags describe:

- ``components``: ``all``, or ``understanding``: the understanding tower (each MoT layer's
  understanding expert, whose keys are a plain Qwen2 layer's), the ViT and the connector. The
  generation expert, the VAE, the time embedder and the latent projections are never read. Exact
  for understanding: text and ViT tokens only ever use the understanding expert.
- ``quantize``: ``none``, ``int8`` (weight-only, torchao; CPU and CUDA) or ``nf4`` (bitsandbytes;
  CUDA), applied to the decoder layers, lm_head and the ViT's encoder layers as they load.
- ``offload``: ``none``, or ``cpu``: decoder layers stay in host memory and stream to the GPU.
- ``device_map``: ``auto`` | ``balanced`` | a JSON object: decoder layers over several devices.

This module is torch-free (the CLI's ``--help`` imports it); what a plan costs in bytes is
:mod:`unimedvl.checkpoint.memory_estimate`, how weights get there :mod:`unimedvl.checkpoint.placement`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from unimedvl.config import ModelConfig
from unimedvl.errors import ConfigError

COMPONENTS = ("all", "understanding")
QUANTIZATIONS = ("none", "int8", "nf4")
OFFLOADS = ("none", "cpu")
DEVICE_MAP_PRESETS = ("auto", "balanced")

# The parts of a UnifiedModel that only generation uses (module names, and the gen expert's suffix).
GENERATION_MODULES = ("time_embedder", "vae2llm", "llm2vae", "latent_pos_embed", "vae")
GEN_EXPERT_SUFFIX = "_moe_gen"


def is_generation_key(key: str) -> bool:
    """True for a checkpoint tensor that only generation reads (gen expert, latent path, VAE)."""
    return GEN_EXPERT_SUFFIX in key or key.split(".", 1)[0] in GENERATION_MODULES


@dataclass(frozen=True)
class LoadPlan:
    """How a checkpoint is loaded: what, in which precision, where."""

    components: str = "all"  # all | understanding (the understanding tower, ViT and connector only)
    quantize: str = "none"  # none | int8 (weight-only, CPU and CUDA) | nf4 (CUDA)
    offload: str = "none"  # none | cpu: decoder layers in host memory, streamed to the GPU layer by layer
    device_map: str | None = None  # auto | balanced | JSON {"0-13": "cuda:0", "14-27": "cuda:1"}: layers over devices

    def __post_init__(self) -> None:
        for name, choices in (("components", COMPONENTS), ("quantize", QUANTIZATIONS), ("offload", OFFLOADS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.offload != "none" and self.device_map is not None:
            raise ConfigError("offload='cpu' and a device_map both place the decoder layers; choose one of them")
        if self.offload != "none" and self.quantize == "nf4":
            raise ConfigError(
                "nf4 weights cannot be offloaded (bitsandbytes keeps them on the GPU); use "
                "quantize='int8' with offload='cpu', or nf4 without offload"
            )

    @property
    def understanding_only(self) -> bool:
        return self.components == "understanding"

    @property
    def needs_cuda(self) -> bool:
        """nf4 and offload only exist on CUDA (device maps say so per device)."""
        return self.quantize == "nf4" or self.offload != "none"

    def label(self, dtype: str = "bf16") -> str:
        """``understanding-int8``, ``all-bf16+offload``, ...: the plan's name in tables and messages."""
        precision = dtype if self.quantize == "none" else self.quantize
        place = "+offload" if self.offload != "none" else ("+device-map" if self.device_map else "")
        return f"{self.components}-{precision}{place}"


def default_dtype(device) -> str:
    """The dtype a checkpoint is loaded in when none is asked for: ``bf16`` on CUDA, ``fp32`` elsewhere."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def candidate_plans(components: str | None = None, cuda: bool = True) -> list[LoadPlan]:
    """Plans in order of cost, cheapest first: exact before int8 before nf4, all before offload.

    Offloading streams every layer over PCIe for every forward (seconds per token), so it comes
    after every quantisation; understanding-only plans are listed only when ``components`` allows.
    Without CUDA only the plans a CPU can run.
    """
    order = [("none", "none"), ("int8", "none"), ("nf4", "none"), ("none", "cpu"), ("int8", "cpu")]
    plans = []
    for comp in COMPONENTS if components is None else (components,):
        for quantize, offload in order:
            plan = LoadPlan(comp, quantize, offload)
            if cuda or not plan.needs_cuda:
                plans.append(plan)
    return plans


def understanding_config(cfg: ModelConfig) -> ModelConfig:
    """The config of the understanding-only model: no generation path, one expert per layer.

    The understanding expert's weights are named exactly as a plain Qwen2 layer's (the generation
    twins carry ``_moe_gen``), so a ``Qwen2DecoderLayer`` stack reads them unchanged.
    """
    llm = dataclasses.replace(cfg.llm, layer_module="Qwen2DecoderLayer")
    return dataclasses.replace(cfg, llm=llm, visual_gen=False)


_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_memory(text: str | int | float, what: str = "max_memory") -> int:
    """Bytes from ``24GB`` (10^9), ``22GiB`` (2^30), ``500MB``, or a number of bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = _SIZE.match(str(text))
        unit = match.group(2).upper() if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(f"{what}={text!r} is not a memory size; write e.g. 24GB, 22GiB or 800MB")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"{what}={text!r} must be a positive memory size, e.g. 24GB")
    return value


def format_bytes(n: int | float) -> str:
    """``29.3 GB``, ``512 MB`` (decimal units, as GPU memory is advertised)."""
    if n >= 10**9:
        return f"{n / 1e9:.1f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} kB"


class PlanNotice(UserWarning):
    """Which plan ``max_memory`` chose (a notice, shown once like any UserWarning)."""
