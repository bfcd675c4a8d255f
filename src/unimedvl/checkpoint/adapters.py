"""LoRA adapter checkpoints: write, check against their base, attach at load time, merge into the release layout.

A LoRA run's step directory holds no base weights, only what trained (megabytes for adapters
on a frozen base):

- ``adapter_config.json``: the base it was trained on (path, weights file, fingerprint), the
  scale (alpha / rank) of every adapted Linear, the quantisation of the base while training;
- ``adapter.safetensors`` (raw) and ``adapter_ema.safetensors`` (EMA, when kept): every trainable
  tensor, i.e. ``lora_A``/``lora_B`` plus any parameter the freeze flags left trainable;
- tokenizer and ``inference_config.json`` (the trained feeding), beside ``train_state/`` etc.

The base fingerprint (:func:`base_fingerprint`) is a sha256 over the safetensors headers (names,
dtypes, shapes) of the weights file(s) and three 4 KiB samples (start, middle, end) of every
tensor's bytes: two different fine-tunes of one architecture differ in nearly every element,
so it tells bases apart while reading megabytes, not the 29 GB. Merging or attaching an adapter
to a base with another fingerprint is refused.

Using one: ``attach_adapter(model, DIR)`` wraps each adapted module of a loaded model (plain,
int8/nf4-quantised, device-mapped or offloaded) in :class:`AdapterLinear` (``base(x) + scale * B A x``)
and copies the other trained tensors in; ``from_pretrained(..., adapter=DIR)`` and the inference
commands' ``--adapter DIR`` do this. ``merge_adapter`` (``unimedvl merge-adapter``) writes the
release layout with the adapters folded into the original base read from the source checkpoint
(its stored dtype, bf16 for the release), never into a dequantised copy, tensor by tensor into
shards of :data:`SHARD_BYTES`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from unimedvl.errors import CheckpointError

CONFIG = "adapter_config.json"
WEIGHTS = {"model": "adapter.safetensors", "ema": "adapter_ema.safetensors"}
FORMAT = "unimedvl-lora-adapter"
SAMPLE = 4096  # bytes per fingerprint sample
SHARD_BYTES = 2 * 2**30  # most bytes of one merged shard held in memory before it is written


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def base_fingerprint(base_dir: str | Path, prefer: str = "model") -> str:
    """sha256 of the safetensors headers and sampled bytes of the weights ``find_weights`` picks."""
    from unimedvl.checkpoint.release import find_weights

    source = find_weights(Path(base_dir), prefer)
    digest = hashlib.sha256()
    for file in sorted(set(source.files.values())):
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            start = 8 + size
            for key in sorted(k for k in header if k != "__metadata__"):
                entry = header[key]
                digest.update(json.dumps([key, entry["dtype"], entry["shape"]]).encode())
                lo, hi = (start + o for o in entry["data_offsets"])
                for at in sorted({lo, max(lo, (lo + hi) // 2 - SAMPLE // 2), max(lo, hi - SAMPLE)}):
                    f.seek(at)
                    digest.update(f.read(min(SAMPLE, hi - at)))
    return digest.hexdigest()


def write_adapter(
    path: Path,
    raw: Mapping[str, Tensor],
    ema: Mapping[str, Tensor] | None,
    scales: Mapping[str, float],
    base_dir: str | Path,
    prefer: str,
    fingerprint: str,
    quantize_base: str,
    step: int,
    side=None,
) -> None:
    """Write the adapter files of a step directory (``raw``/``ema``: name -> full CPU tensor).

    ``side``: (model config, tokenizer, inference config) written beside them: batch evaluation
    reads the model config of what it evaluates, and the trained feeding goes with the adapter."""
    from unimedvl.checkpoint.inference_config import for_model
    from unimedvl.checkpoint.release import save_tensors, write_configs

    path.mkdir(parents=True, exist_ok=True)
    if side is not None:
        model_cfg, tokenizer, inference_config = side
        write_configs(model_cfg, path)
        tokenizer.save(path)
        for_model(model_cfg, inference_config).save(path)
    save_tensors(dict(raw), path / WEIGHTS["model"])
    if ema is not None:
        save_tensors(dict(ema), path / WEIGHTS["ema"])
    config = {
        "format": FORMAT,
        "version": 1,
        "step": step,
        "base": {"path": str(Path(base_dir).resolve()), "weights": prefer, "fingerprint": fingerprint},
        "quantize_base": quantize_base,
        "scales": dict(sorted(scales.items())),
        "trained": sorted(k for k in raw if not k.endswith((".lora_A", ".lora_B"))),
    }
    (path / CONFIG).write_text(json.dumps(config, indent=2))


def read_adapter_config(path: str | Path) -> dict:
    path = Path(path)
    file = path / CONFIG
    if not file.is_file():
        raise CheckpointError(
            f"--adapter {path}: no {CONFIG}; give a step directory of a LoRA run "
            "(step_XXXXXXX holding adapter.safetensors)"
        )
    try:
        config = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}:{err.lineno}: invalid JSON ({err.msg})") from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a UniMedVL adapter (format {config.get('format')!r})")
    return config


def read_adapter(path: str | Path, weights: str = "ema") -> tuple[dict, dict[str, Tensor]]:
    """(config, tensors) of an adapter directory; ``weights``: ema (falls back to raw) or model."""
    from safetensors.torch import load_file

    path = Path(path)
    config = read_adapter_config(path)
    order = ["ema", "model"] if weights == "ema" else ["model"]
    for kind in order:
        file = path / WEIGHTS[kind]
        if file.is_file():
            return config, load_file(str(file))
    raise CheckpointError(f"{path}: {WEIGHTS['model']} is missing; the adapter directory is incomplete")


def check_base(config: dict, base_dir: str | Path, where: str) -> None:
    """CheckpointError unless ``base_dir`` holds the weights the adapter was trained on."""
    base = config["base"]
    have = base_fingerprint(base_dir, base.get("weights", "model"))
    if have != base["fingerprint"]:
        raise CheckpointError(
            f"{where}: this adapter was trained on {base['path']} (fingerprint {base['fingerprint'][:12]}), but "
            f"{base_dir} holds other weights ({have[:12]}); use the base it was trained on"
        )


def resolve_base(config: dict, base: str | Path | None, where: str) -> Path:
    path = Path(base) if base is not None else Path(config["base"]["path"])
    if not path.is_dir():
        raise CheckpointError(
            f"{where}: base checkpoint {path} not found; pass the base the adapter was trained on (--base DIR)"
        )
    check_base(config, path, where)
    return path


def gather_trainable(model: nn.Module, ema_state: Mapping[str, Tensor] | None, is_main: bool):
    """Full fp32 CPU copies of the trainable tensors (raw, EMA) on the main rank ({} / None elsewhere);
    every rank must call it (sharded tensors are gathered)."""

    def full(tensors) -> dict[str, Tensor]:
        out = {}
        for name, t in tensors.items():
            t = t.full_tensor() if hasattr(t, "full_tensor") else t
            if is_main:
                out[name] = t.detach().to("cpu", torch.float32)
        return out

    raw = full({n: p for n, p in model.named_parameters() if p.requires_grad})
    ema = full(ema_state) if ema_state is not None else None
    return raw, ema


def adapter_base(adapter: str | Path, base: str | Path | None = None) -> Path:
    """The base checkpoint of ``adapter`` (``base``, or the one it records), checked by fingerprint."""
    return resolve_base(read_adapter_config(adapter), base, f"--adapter {adapter}")


# ---------------------------------------------------------------------------------------------
# Attaching to a loaded model.


class AdapterLinear(nn.Module):
    """``base(x) + scale * (x A^T) B^T`` around any Linear-like module (plain, int8, nf4, streamed)."""

    def __init__(self, base: nn.Module, lora_A: Tensor, lora_B: Tensor, scale: float):
        super().__init__()
        self.base = base
        device = next(base.parameters()).device
        self.lora_A = nn.Parameter(lora_A.to(device), requires_grad=False)
        self.lora_B = nn.Parameter(lora_B.to(device), requires_grad=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.lora_A.to(x.device, x.dtype), self.lora_B.to(x.device, x.dtype)
        return self.base(x) + (x @ a.T) @ b.T * self.scale


def attach_adapter(model: nn.Module, path: str | Path, base_dir: str | Path, weights: str = "ema") -> dict:
    """Apply an adapter to ``model`` loaded from ``base_dir`` (checked); returns the adapter config."""
    config, tensors = read_adapter(path, weights)
    check_base(config, base_dir, f"--adapter {path}")
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    from unimedvl.checkpoint.memory_plan import is_generation_key

    understanding_only = getattr(getattr(model, "load_plan", None), "understanding_only", False)
    for name, scale in config["scales"].items():
        a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
        if name not in modules and understanding_only and is_generation_key(name + ".weight"):
            continue  # the generation expert of an understanding-only load
        if a is None or b is None or name not in modules:
            raise CheckpointError(
                f"--adapter {path}: no {name} in {'the adapter' if name in modules else 'the model'}"
                "; the adapter belongs to another model configuration"
            )
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, AdapterLinear(modules[name], a, b, scale))
    for key in config.get("trained", []):
        target = params.get(key)
        if target is None:
            continue  # e.g. a generation tensor of an understanding-only load
        if type(target) not in (nn.Parameter, Tensor):
            raise CheckpointError(
                f"--adapter {path}: it trained {key} in full, which this plan holds quantised; "
                "merge it first (unimedvl merge-adapter) or load without --quantize"
            )
        with torch.no_grad():
            target.copy_(tensors[key].to(target.dtype))
    return config


# ---------------------------------------------------------------------------------------------
# Merging into the release layout.


def merge_adapter(adapter: str | Path, out: str | Path, base: str | Path | None = None, weights: str = "ema") -> Path:
    """Write the release layout at ``out``: the base's tensors (its dtype) with the adapters folded in.

    Streams tensor by tensor into shards of at most SHARD_BYTES (one file when it fits); copies the
    base's VAE, configs and tokenizer, and the adapter's inference_config.json and tokenizer.
    """
    from safetensors.torch import save_file

    from unimedvl.checkpoint.release import VAE_PREFIX, find_weights
    from unimedvl.checkpoint.weight_stream import open_file

    adapter, out = Path(adapter), Path(out)
    config, tensors = read_adapter(adapter, weights)
    base_dir = resolve_base(config, base, f"merge-adapter {adapter}")
    if out.resolve() in (base_dir.resolve(), adapter.resolve()):
        raise CheckpointError(f"--out {out}: write the merged checkpoint to a new directory")
    source = find_weights(base_dir, config["base"].get("weights", "model"))
    scales = config["scales"]
    out.mkdir(parents=True, exist_ok=True)
    _copy_side_files(base_dir, adapter, out)
    shards: list[dict[str, Tensor]] = [{}]
    size, index = 0, {}
    names: list[str] = []

    def flush() -> None:
        nonlocal size
        name = f"ema-{len(names) + 1:05d}.safetensors"
        save_file(shards[-1], str(out / name), metadata={"format": "pt"})
        names.append(name)
        index.update({k: name for k in shards[-1]})
        shards[-1], size = {}, 0

    for file in sorted(set(source.files.values())):
        with open_file(file) as f:
            for key in f.keys():
                value = _merged(key, f.get_tensor(key), tensors, scales)
                if size and size + value.numel() * value.element_size() > SHARD_BYTES:
                    flush()
                shards[-1][key] = value.contiguous()
                size += value.numel() * value.element_size()
    flush()
    if len(names) == 1:
        (out / names[0]).rename(out / "ema.safetensors")
    else:
        (out / "ema.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}, indent=2))
    vae = {k[len(VAE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(VAE_PREFIX)}
    if vae:  # a decoder trained through pixel losses
        with open_file(base_dir / "ae.safetensors") as f:
            ae = {k: vae[k].to(f.get_tensor(k).dtype) if k in vae else f.get_tensor(k) for k in f.keys()}
        save_file(ae, str(out / "ae.safetensors"), metadata={"format": "pt"})
    return out


def _merged(key: str, value: Tensor, tensors: Mapping[str, Tensor], scales: Mapping[str, float]) -> Tensor:
    if key in tensors:
        return tensors[key].to(value.dtype)
    owner, _, local = key.rpartition(".")
    if local == "weight" and owner in scales:
        a, b = tensors[f"{owner}.lora_A"].float(), tensors[f"{owner}.lora_B"].float()
        return (value.float() + scales[owner] * (b @ a)).to(value.dtype)
    return value


def _copy_side_files(base_dir: Path, adapter: Path, out: Path) -> None:
    for item in base_dir.iterdir():
        if (
            item.is_file()
            and (item.suffix != ".safetensors" or item.name == "ae.safetensors")
            and not item.name.endswith(".safetensors.index.json")
        ):
            shutil.copy2(item, out / item.name)
    for item in adapter.iterdir():
        if item.is_file() and (
            item.name == "inference_config.json" or item.name.startswith(("tokenizer", "vocab", "merges"))
        ):
            shutil.copy2(item, out / item.name)
