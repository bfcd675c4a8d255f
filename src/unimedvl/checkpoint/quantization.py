"""Weight-only quantisation of the model's large Linear layers, one layer at a time as it loads.

Which layers: every ``nn.Linear`` of the decoder layers, ``lm_head`` and the ViT's encoder
layers (:func:`is_quantized_linear`). The token embeddings, every norm, the ViT's patch
embedding, the connector, the time embedder, the latent projections and the VAE stay in the
compute dtype: they are small (or, for the embeddings, a lookup that reads one row per token),
and the norms and heads are where precision matters most.

Libraries (chosen for torch 2.13; see README "Memory plans"):

- ``int8``: torchao's int8 weight-only tensor (``Int8Tensor``, what ``Int8WeightOnlyConfig`` makes:
  symmetric, one scale per output channel). It works on CPU and CUDA, and it is maintained with
  PyTorch itself. Per-channel scales make rows independent, so :class:`Int8RowQuantizer` builds
  it from row blocks as they stream in (the float matrix never exists whole).
  torchao's eager CPU path dequantises the whole weight on every call (~7x slower than bf16 at
  the release's widths), so :class:`Int8Linear` sends bf16 activations on a CPU to PyTorch's
  native weight-only kernel ``torch._weight_int8pack_mm`` on the same int8 data and scales.
- ``nf4``: bitsandbytes' ``Linear4bit`` (the reference NF4 with fused CUDA kernels; blocks of
  64, double-quantised scales). CUDA only here: on a CPU it is refused with one line.

Both are imported only when asked for (torchao takes seconds to import).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.errors import ConfigError

# Module-name prefixes whose Linear layers are quantised (see the module docstring).
QUANTIZED_PREFIXES = ("language_model.model.layers.", "vit_model.vision_model.encoder.layers.")
QUANTIZED_NAMES = ("language_model.lm_head",)
TORCHAO_PIN = "torchao==0.18.0"
BITSANDBYTES_PIN = "bitsandbytes==0.50.2"
NF4_BLOCK = 64  # weights per absmax (bitsandbytes' default)
NF4_NESTED_BLOCK = 256  # absmax values per fp32 scale of the double quantisation
QUANTIZE_BLOCK_ELEMENTS = 2**22  # weights quantised per block (the fp32 workspace: 16 MB)


def is_quantized_linear(name: str) -> bool:
    """True for the module names whose ``nn.Linear`` a quantised plan replaces."""
    return name in QUANTIZED_NAMES or name.startswith(QUANTIZED_PREFIXES)


def quantized_weight_bytes(out_features: int, in_features: int, method: str) -> int:
    """Bytes of one quantised weight matrix (bias not included), as the libraries store it.

    int8 (torchao): int8 data, an fp32 scale and an int8 zero point per output channel.
    nf4 (bitsandbytes): 4-bit data, a uint8 absmax per block of 64, an fp32 scale per 256 blocks.
    """
    n = out_features * in_features
    if method == "int8":
        return n + 5 * out_features
    if method == "nf4":
        blocks = -(-n // NF4_BLOCK)
        return n // 2 + blocks + 4 * -(-blocks // NF4_NESTED_BLOCK)
    raise ConfigError(f"quantize={method!r}; choose int8 or nf4")


def check_quantization(method: str, device: torch.device) -> None:
    """One-line ConfigError when ``method`` cannot run on ``device`` or its library is missing."""
    if method == "none":
        return
    if method == "nf4":
        if device.type != "cuda":
            raise ConfigError(
                f"quantize='nf4' needs a CUDA GPU (bitsandbytes' 4-bit kernels), and the model goes "
                f"to {device}; on a CPU use quantize='int8' (--quantize int8)"
            )
        _require(
            "bitsandbytes",
            f"quantize='nf4' needs bitsandbytes: pip install {BITSANDBYTES_PIN} (or the unimedvl[nf4] extra)",
        )
    elif method == "int8":
        _require("torchao", f"quantize='int8' needs torchao: pip install {TORCHAO_PIN}")
    else:
        raise ConfigError(f"quantize={method!r}; choose none, int8 or nf4")


def _require(module: str, message: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(message)


@contextmanager
def _quiet_import():
    # torchao logs, on import, that its CUDA-only kernels cannot load on a CPU build of torch
    # and a torch deprecation notice about one of its enums: noise for a user, not a problem.
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _torchao():
    with _quiet_import():
        from torchao.quantization import Int8Tensor
    return Int8Tensor


class Int8RowQuantizer:
    """Builds torchao's int8 weight (``Int8Tensor``, as ``Int8WeightOnlyConfig`` makes it) from row blocks.

    The quantisation is symmetric with one scale per output channel (row), so rows quantised in
    blocks give exactly the tensor of quantising the whole matrix, and the float matrix never has
    to exist at once (the release's lm_head is 1.1 GB in bf16). The arithmetic is torchao's
    (``choose_qparams_affine`` + ``quantize_affine``, symmetric, per row: scale = max|w| / 127.5 in
    the weight's dtype, q = clamp(round(w / scale), -128, 127); a test checks it bit for bit) but
    written into one reused fp32 workspace: torchao's functions allocate several fp32 temporaries
    per call, and their churn while a checkpoint streams in left ~0.3 GB of freed memory in the
    host heap (measured with bench/memory.py).
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        if len(shape) != 2:
            raise ConfigError(f"int8 quantisation takes 2-D weights, got shape {shape}")
        self.int8_tensor = _torchao()
        self.dtype, self.rows = dtype, 0
        self.qdata = torch.empty(shape, dtype=torch.int8, device=device)
        self.scale = torch.empty(shape[0], 1, dtype=torch.float32, device=device)
        self.zero_point = torch.zeros(shape[0], 1, dtype=torch.int8, device=device)  # symmetric: all zero
        self.step = max(1, QUANTIZE_BLOCK_ELEMENTS // shape[1])  # rows per workspace block
        self.work = torch.empty(min(self.step, shape[0]), shape[1], dtype=torch.float32, device=device)

    def add(self, rows: Tensor) -> None:
        for start in range(0, rows.shape[0], self.step):
            block = rows[start : start + self.step]
            n, at = block.shape[0], self.rows
            # torchao: max(-min(amin, 0), max(amax, 0)) / ((127 - -128) / 2), clamped at fp32 eps,
            # computed in the weight's dtype and then stored as fp32.
            low = torch.amin(block, dim=1, keepdim=True).clamp(max=0)
            high = torch.amax(block, dim=1, keepdim=True).clamp(min=0)
            scale = (torch.max(-low, high) / 127.5).clamp(min=torch.finfo(torch.float32).eps).to(torch.float32)
            work = self.work[:n]
            torch.mul(block, 1.0 / scale, out=work)
            work.round_().clamp_(-128, 127)
            self.qdata[at : at + n].copy_(work)
            self.scale[at : at + n] = scale
            self.rows += n

    def finish(self) -> Tensor:
        if self.rows != self.qdata.shape[0]:
            raise ConfigError(f"int8 quantisation got {self.rows} of {self.qdata.shape[0]} rows")
        return self.int8_tensor(
            self.qdata, self.scale, [1, self.qdata.shape[1]], self.dtype, zero_point=self.zero_point
        )


class Int8Linear(nn.Linear):
    """A Linear whose weight is a torchao ``Int8Tensor`` (int8 per-channel weight-only).

    On CUDA, and for fp32 activations, torchao's own dispatch runs the matmul. bf16 activations
    on a CPU take ``torch._weight_int8pack_mm`` (the same int8 data and scales, PyTorch's fused
    CPU kernel), which avoids materialising a bf16 copy of the weight on every call.
    """

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if x.device.type == "cpu" and x.dtype == torch.bfloat16:
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), w.qdata, w.scale.view(-1).to(x.dtype))
            y = y.view(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias
        return F.linear(x, w, self.bias)


def quantize_linear(linear: nn.Linear, method: str, compute_dtype: torch.dtype) -> nn.Module:
    """The quantised replacement of ``linear`` (its weights already loaded), on the same device.

    The float weight is released as soon as the quantised one exists: this runs per layer while
    a checkpoint streams in, so the full-precision model never exists at once.
    """
    if method == "int8":
        return _int8(linear)
    if method == "nf4":
        return _nf4(linear, compute_dtype)
    raise ConfigError(f"quantize={method!r}; choose int8 or nf4")


def _int8(linear: nn.Linear) -> Int8Linear:
    if isinstance(linear, Int8Linear):
        return linear
    weight = linear.weight
    if not isinstance(weight, _torchao()):  # a float weight: quantise it (streaming loads hand over int8 already)
        quantizer = Int8RowQuantizer(tuple(weight.shape), weight.dtype, weight.device)
        quantizer.add(weight.detach())
        weight = quantizer.finish()
    with torch.device("meta"):
        out = Int8Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    out.weight = nn.Parameter(weight, requires_grad=False)
    out.bias = linear.bias
    return out.requires_grad_(False)


def _nf4(linear: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    device = linear.weight.device
    with torch.device("meta"):
        out = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=compute_dtype,
            quant_type="nf4",
            compress_statistics=True,
        )
    out.weight = bnb.nn.Params4bit(
        linear.weight.data, requires_grad=False, quant_type="nf4", compress_statistics=True, blocksize=NF4_BLOCK
    )
    if linear.bias is not None:
        out.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return out.to(device)  # bitsandbytes quantises here, on the device
