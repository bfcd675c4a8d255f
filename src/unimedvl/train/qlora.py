"""QLoRA: the frozen Linear weights of the decoder layers and the ViT held quantised while adapters train.

``--quantize_base int8|nf4`` (with LoRA, see train/lora.py): every ``nn.Linear`` inside the
decoder layers (both experts) and the ViT encoder layers keeps its weight as a torchao tensor
subclass; adapters and every other trainable parameter keep fp32 master weights. The product
with a quantised weight runs through :class:`QuantizedLinearFn`, which saves only the quantised
weight for backward and dequantises it again there, so gradients reach the input (and the
adapters before it) without a full-precision copy of the weight living until backward.

Library: torchao for both formats (pinned in requirements.txt, already used by the int8
inference plan):

- ``nf4``: torchao's ``NF4Tensor`` (``to_nf4``): 4-bit NormalFloat, blocks of 64 weights with
  double-quantised scales, the format of the QLoRA paper and what torchtune's QLoRA uses. It
  runs on CPU and CUDA, and it implements FSDP2's all-gather extension
  (``fsdp_pre_all_gather``/``fsdp_post_all_gather``), so ``fully_shard`` shards the quantised
  base itself. bitsandbytes (the inference plan's nf4) was not chosen for training: its 4-bit
  kernels need CUDA, so nothing here could be tested on a CPU or with gloo, and its FSDP2
  support needs patches.
- ``int8``: torchao's ``Int8Tensor`` (symmetric, one scale per output channel, as the int8
  inference plan; built block by block by ``quantization.Int8RowQuantizer``). It has no FSDP2
  extension, so under FSDP2 the int8 weights are kept out of sharding (``fsdp_ignored``): every
  rank holds the whole int8 base (half of bf16), the adapters are sharded.

Loading (:func:`load_quantized`) streams the checkpoint module by module on the meta-built model
(``weight_stream``): an int8 weight is quantised row block by row block, an nf4 one from one
Linear's bf16 rows; host memory stays near the quantised model plus one Linear. Frozen
floating-point parameters outside the quantised layers (embeddings, norms, lm_head when the LLM
is frozen) are held in the compute dtype; trainable ones in fp32.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.errors import CheckpointError, ConfigError

QUANTIZED_PREFIXES = ("language_model.model.layers.", "vit_model.vision_model.encoder.layers.")
NF4_BLOCK = 64  # weights per absmax (torchao's and the QLoRA paper's default)
NF4_SCALER_BLOCK = 256  # absmax values per double-quantisation scale (smaller for matrices that are not a multiple)
TORCHAO_PIN = "torchao==0.18.0"


def is_quantized(t: Tensor) -> bool:
    """True for a torchao NF4Tensor or Int8Tensor (False without importing torchao when it is not loaded)."""
    if "torchao" not in sys.modules:
        return False
    nf4, int8 = _classes()
    return isinstance(t, (nf4, int8))


def _classes():
    from unimedvl.checkpoint.quantization import _quiet_import

    with _quiet_import():
        from torchao.quantization import Int8Tensor, NF4Tensor
    return NF4Tensor, Int8Tensor


def dequantize(w: Tensor, dtype: torch.dtype) -> Tensor:
    """A plain ``dtype`` copy of a quantised weight."""
    nf4, _ = _classes()
    if isinstance(w, nf4):
        return w.get_original_weight().to(dtype)
    return w.dequantize(dtype)


class QuantizedLinearFn(torch.autograd.Function):
    """``x W^T`` with a frozen quantised ``W``: saves only ``W`` (quantised) and dequantises it again in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        """``x W^T`` with ``W`` dequantised on the fly; only the quantised ``W`` is saved."""
        ctx.save_for_backward(weight)
        return F.linear(x, dequantize(weight, x.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor):
        """The gradient for ``x`` only: the frozen weight gets none."""
        (weight,) = ctx.saved_tensors
        return grad @ dequantize(weight, grad.dtype), None


def quantized_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear for a quantised frozen weight; under autocast the input takes the autocast dtype."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    with torch.autocast(x.device.type, enabled=False):
        out = QuantizedLinearFn.apply(x, weight)
    return out if bias is None else out + bias.to(out.dtype)


class QuantizedLinear(nn.Linear):
    """A frozen Linear without LoRA whose weight is quantised (a class swap, names unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        """The layer's output through its quantised weight."""
        return quantized_linear(x, self.weight, self.bias)


def quantized_names(model: nn.Module) -> list[str]:
    """Names of the Linear layers (LoRA ones included) whose weight a quantised base holds quantised."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(QUANTIZED_PREFIXES)]


def check_quantize_base(method: str) -> None:
    """One-line ConfigError when the library for ``method`` cannot run here (before any heavy work)."""
    if method == "none":
        return
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError(f"--quantize_base {method} needs torchao: pip install {TORCHAO_PIN}")
    try:
        _classes()
    except ImportError as err:
        raise ConfigError(
            f"--quantize_base {method}: this torchao has no NF4Tensor/Int8Tensor ({err}); pip install {TORCHAO_PIN}"
        ) from None


RESUME_KEYS = ("quantize_base", "lora_rank", "lora_target_modules") + tuple(
    f"lora_{kind}_{part}" for kind in ("rank", "targets") for part in ("und", "gen", "vit")
)


def check_qlora_setup(cfg, resume_dir: Path | None, manifest: dict | None) -> None:
    """Before any heavy work: the quantisation library can run, and a resumed checkpoint was written by a
    run with the same base quantisation and LoRA layout (its trainable tensors are what this run trains)."""
    check_quantize_base(cfg.quantize_base)
    if resume_dir is None or manifest is None:
        return
    saved = manifest.get("config") or {}
    now = {k: getattr(cfg, k) for k in RESUME_KEYS}
    then = {k: saved.get(k, "none" if k == "quantize_base" else None) for k in RESUME_KEYS}
    then = {
        k: (now[k] if v is None and k.startswith("lora_") and k[-4:] in ("_und", "_gen", "_vit") else v)
        for k, v in then.items()
    }  # checkpoints from before the per-part fields
    differ = [k for k in RESUME_KEYS if then[k] != now[k]]
    if differ:
        said = ", ".join(f"{k}={then[k]}" for k in differ)
        asked = ", ".join(f"{k}={now[k]}" for k in differ)
        raise CheckpointError(
            f"{resume_dir} was written by a run with {said}, this run has {asked}: resume with the same flags, or "
            "start a new run from its weights (merge a LoRA step first: unimedvl merge-adapter)"
        )


def nf4_scaler_block(numel: int) -> int:
    """The double-quantisation block for a matrix of ``numel`` weights: 256, or the largest divisor below that
    of its count of 64-blocks divided by 8, so that FSDP2 can split it into up to 8 shards along rows
    (torchao needs every shard's block count to be a multiple of it). 256 at the release's widths."""
    blocks = numel // NF4_BLOCK
    per_shard = blocks // 8 if blocks % 8 == 0 else blocks
    for size in range(min(NF4_SCALER_BLOCK, per_shard), 0, -1):
        if per_shard % size == 0:
            return size
    return 1


def to_nf4(weight: Tensor) -> Tensor:
    """torchao's NF4Tensor of a bf16 (or float) matrix; ConfigError when its size is not a multiple of 64."""
    from torchao.quantization import to_nf4 as _to_nf4

    if weight.numel() % NF4_BLOCK:
        raise ConfigError(
            f"nf4 needs weight matrices whose size is a multiple of {NF4_BLOCK}, got {tuple(weight.shape)}; "
            "use --quantize_base int8"
        )
    return _to_nf4(weight.to(torch.bfloat16), NF4_BLOCK, nf4_scaler_block(weight.numel()))


class NF4Rows:
    """Accumulator (weight_stream) of one Linear's rows in bf16; ``finish`` returns its NF4Tensor."""

    def __init__(self, shape: tuple[int, ...], device: torch.device):
        self.rows = torch.empty(shape, dtype=torch.bfloat16, device=device)
        self.at = 0

    def add(self, rows: Tensor) -> None:
        """Copy the next block of rows in as the weight streams from disk."""
        self.rows[self.at : self.at + rows.shape[0]].copy_(rows)
        self.at += rows.shape[0]

    def finish(self) -> Tensor:
        """The whole weight quantised to NF4; the bf16 rows are freed."""
        out = to_nf4(self.rows)
        self.rows = None
        return out


def quantize_weight(weight: Tensor, method: str) -> Tensor:
    """The quantised copy of a float weight (tests and merges use it; loading builds it block by block)."""
    if method == "nf4":
        return to_nf4(weight.detach())
    from unimedvl.checkpoint.quantization import Int8RowQuantizer

    q = Int8RowQuantizer(tuple(weight.shape), torch.float32, weight.device)
    q.add(weight.detach().float())
    return q.finish()


def _freeze_quantized(module: nn.Linear, weight: Tensor) -> nn.Linear:
    module.weight = nn.Parameter(weight, requires_grad=False)
    if type(module) is nn.Linear:
        module.__class__ = QuantizedLinear
    return module


def load_quantized(
    model: nn.Module, weights_dir: str | Path, prefer: str, method: str, device: torch.device, frozen_dtype: torch.dtype
) -> None:
    """Stream a release checkpoint into ``model`` (built on meta, LoRA injected, freezing applied).

    The Linear layers of :func:`quantized_names` get ``method`` weights (frozen); trainable
    parameters become fp32, frozen floating ones ``frozen_dtype``; LoRA adapters and the
    recomputed position tables are created empty (the caller resets them).
    """
    from unimedvl.checkpoint.release import (
        RECOMPUTED_KEYS,
        VAE_PREFIX,
        WeightSource,
        find_weights,
        load_into,
        open_file,
    )
    from unimedvl.checkpoint.weight_stream import Placement
    from unimedvl.train.parallel import _disabled_prefixes

    check_quantize_base(method)
    weights_dir = Path(weights_dir)
    quantized = set(quantized_names(model))
    for name in quantized:
        model.get_submodule(name).weight.requires_grad_(False)  # a quantised weight cannot train
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = tuple(n for n in model.state_dict(keep_vars=True) if n.endswith((".lora_A", ".lora_B")))

    def accumulate(key: str, shape, target: torch.dtype, dev: torch.device):
        owner, _, local = key.rpartition(".")
        if local != "weight" or owner not in quantized:
            return None
        if method == "nf4":
            return NF4Rows(shape, dev)
        from unimedvl.checkpoint.quantization import Int8RowQuantizer

        return Int8RowQuantizer(shape, frozen_dtype, dev)

    def finish(name: str, module: nn.Module) -> nn.Module:
        if name in quantized:
            _freeze_quantized(module, module.weight.data if not is_quantized(module.weight) else module.weight)
        for pname, p in list(module.named_parameters(recurse=False)):
            full = f"{name}.{pname}" if name else pname
            if p.is_meta or is_quantized(p) or not p.is_floating_point():
                continue
            want = torch.float32 if full in trainable else frozen_dtype
            if p.dtype != want:
                module._parameters[pname] = nn.Parameter(p.data.to(want), requires_grad=p.requires_grad)
        return module

    source = find_weights(weights_dir, prefer)
    disabled = _disabled_prefixes(model.config)
    files = {k: f for k, f in source.files.items() if not k.startswith(disabled)}
    load_into(
        model,
        WeightSource(files),
        str(weights_dir),
        torch.float32,
        Placement(device, None, finish, accumulate),
        exclude=VAE_PREFIX,
        optional=RECOMPUTED_KEYS + adapters,
        skip=RECOMPUTED_KEYS + adapters,
    )
    if hasattr(model, "vae"):
        ae = weights_dir / "ae.safetensors"
        with open_file(ae) as f:
            load_into(model.vae, WeightSource({k: ae for k in f.keys()}), str(ae), torch.float32, device)
    _materialize_meta(model, device)


def _materialize_meta(model: nn.Module, device: torch.device) -> None:
    """Allocate what loading did not fill (adapters, position tables) in place, on ``device``."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.is_meta:
                module._parameters[name] = nn.Parameter(
                    torch.empty_like(p, device=device), requires_grad=p.requires_grad
                )
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_meta:
                module._buffers[name] = torch.empty_like(b, device=device)


def fsdp_ignored(model: nn.Module) -> set[nn.Parameter]:
    """Quantised weights FSDP2 cannot shard (int8: no all-gather extension); they stay whole on every rank."""
    if "torchao" not in sys.modules:
        return set()
    _, int8 = _classes()
    return {p for p in model.parameters() if isinstance(p, int8)}


def quantized_bytes(model: nn.Module) -> int:
    """Bytes the quantised weights of ``model`` hold on this rank (logs and tests)."""
    total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        if is_quantized(local):
            for name in local.__tensor_flatten__()[0]:
                inner = getattr(local, name)
                total += inner.numel() * inner.element_size()
    return total
