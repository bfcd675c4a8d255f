"""`unimedvl info`: what is installed, which device and attention backends are usable, model sizes."""

from __future__ import annotations

import argparse
import platform

import torch

from unimedvl import __version__
from unimedvl.config import MODEL_SIZES, model_config


def available_attention_backends() -> list[str]:
    """Packed-attention backends usable in this process (see models/attention.py)."""
    backends = ["sdpa"]
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401

        backends.append("flex")
    except ImportError:
        pass
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            backends.append("flash")
        except ImportError:
            pass
    return backends


def parameter_counts(size: str) -> dict[str, int]:
    """Parameters per component of a named size, counted on the meta device (no memory used)."""
    from unimedvl.models.unified import UnifiedModel

    with torch.device("meta"):
        model = UnifiedModel(model_config(size))
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(counts.values())
    return counts


def _versions() -> dict[str, str]:
    out = {"unimedvl": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "tokenizers", "safetensors", "gradio", "flash_attn"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "not installed"
    return out


def _device() -> str:
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"cuda x{torch.cuda.device_count()} ({', '.join(sorted(names))})"
    return f"cpu ({torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> int:
    print("versions:")
    for name, version in _versions().items():
        print(f"  {name:<13} {version}")
    print(f"device:       {_device()}")
    print(f"attention:    {', '.join(available_attention_backends())}")
    print("model sizes (parameters):")
    for size in MODEL_SIZES:
        counts = parameter_counts(size)
        parts = ", ".join(f"{k} {_human(v)}" for k, v in counts.items() if k != "total")
        print(f"  {size:<13} {_human(counts['total']):>7}  ({parts})")
    return 0


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="versions, device, attention backends and named model sizes")
    parser.set_defaults(func=run)
