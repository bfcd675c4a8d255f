"""Read and write checkpoints in the release layout (BAGEL-7B-MoT / UniMedVL directories).

A checkpoint directory holds:
- ``llm_config.json``: Qwen2 config fields (+ ``qk_norm``, ``layer_module``);
- ``vit_config.json``: SigLIP vision config (``num_hidden_layers`` counts the dropped last layer);
- ``ae.safetensors``: the FLUX VAE;
- ``ema.safetensors`` and/or ``model.safetensors`` or a sharded ``*.safetensors.index.json``: the
  unified model without the VAE;
- tokenizer files;
- ``unimedvl_config.yaml`` (ours only): the complete ModelConfig, so nothing is implied on reload.

Release directories lack the last file; the values they imply are filled in by ``RELEASE_IMPLIED``.
Loading builds the model on the meta device and streams the safetensors into it tensor by tensor
(:mod:`unimedvl.checkpoint.weight_stream`: host memory about the target's size plus one layer), following a
:class:`~unimedvl.checkpoint.memory_plan.LoadPlan` (components, quantisation, offload, device map). Only
safetensors are read: never pickles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from unimedvl.checkpoint.memory_plan import LoadPlan, is_generation_key, understanding_config
from unimedvl.checkpoint.weight_stream import Placement, check_header_shapes, open_file, stream_into
from unimedvl.config import LLMConfig, ModelConfig, VAEConfig, from_dict, load_yaml, save_yaml, to_dict
from unimedvl.errors import CheckpointError, ConfigError, capped
from unimedvl.fileio import atomic_path, shard_files
from unimedvl.models.hf_qwen import llm_config_from_hf
from unimedvl.models.vision import vit_config_from_hf

CONFIG_FILE = "unimedvl_config.yaml"
WEIGHT_FILES = ("ema.safetensors", "model.safetensors")
# Architecture values that release directories do not store (spec section 2).
RELEASE_IMPLIED = {
    "qk_norm": True,
    "tie_word_embeddings": False,
    "layer_module": "Qwen2MoTDecoderLayer",
    "max_latent_size": 64,
    "latent_patch_size": 2,
    "connector_act": "gelu_pytorch_tanh",
    "vit_max_num_patch_per_side": 70,
}
# Buffers that are recomputed from the config and may be absent from a file.
RECOMPUTED_KEYS = ("latent_pos_embed.pos_embed", "vit_pos_embed.pos_embed")
VAE_PREFIX = "vae."
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"dtype={dtype!r}; choose one of fp32, bf16, fp16") from None


# ---------------------------------------------------------------------------------------------
# Configs.


def read_model_config(path: str | Path) -> ModelConfig:
    """The complete ModelConfig of a checkpoint directory (ours, or a release one plus implied values)."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return from_dict(ModelConfig, load_yaml(path / CONFIG_FILE), source=str(path / CONFIG_FILE))
    for name in ("llm_config.json",):
        if not (path / name).is_file():
            raise CheckpointError(
                f"{path}: no {CONFIG_FILE} and no {name}; a checkpoint directory needs llm_config.json, "
                "vit_config.json, ae.safetensors and ema.safetensors (or model.safetensors)"
            )
    llm = _read_json(path / "llm_config.json")
    cfg = ModelConfig(
        llm=llm_config_from_hf(llm, source=str(path / "llm_config.json"), implied=RELEASE_IMPLIED),
        max_latent_size=RELEASE_IMPLIED["max_latent_size"],
        latent_patch_size=RELEASE_IMPLIED["latent_patch_size"],
        connector_act=RELEASE_IMPLIED["connector_act"],
        vit_max_num_patch_per_side=RELEASE_IMPLIED["vit_max_num_patch_per_side"],
    )
    if (path / "vit_config.json").is_file():
        cfg.vit = vit_config_from_hf(_read_json(path / "vit_config.json"), source=str(path / "vit_config.json"))
        cfg.vit_max_num_patch_per_side = cfg.vit.num_patches_per_side
    else:
        cfg.visual_und = False
    if (path / "ae.safetensors").is_file():
        cfg.vae = vae_config_from_file(path / "ae.safetensors")
    else:
        cfg.visual_gen = False
    return cfg


def llm_config_to_hf(cfg: LLMConfig) -> dict:
    """A Qwen2-style ``llm_config.json`` that also states every value the release leaves implied."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": cfg.hidden_act,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "qk_norm": cfg.qk_norm,
        "attention_bias": cfg.attention_bias,
        "layer_module": cfg.layer_module,
        "initializer_range": cfg.initializer_range,
    }


def vit_config_to_hf(cfg: ModelConfig) -> dict:
    """SigLIP ``vit_config.json``; like the release, it counts one layer more than is built."""
    v = cfg.vit
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_attention_heads": v.num_attention_heads,
        "num_hidden_layers": v.num_hidden_layers + 1,
        "patch_size": v.patch_size,
        "num_channels": v.num_channels,
        "image_size": v.image_size,
        "layer_norm_eps": v.layer_norm_eps,
        "hidden_act": v.hidden_act,
    }


def vae_config_from_file(path: Path) -> VAEConfig:
    """Infer the FLUX VAE layout (ch, ch_mult, num_res_blocks, z_channels) from tensor shapes."""
    with _open(path) as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    try:
        ch = shapes["encoder.conv_in.weight"][0]
        levels = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
        ch_mult = tuple(shapes[f"encoder.down.{i}.block.0.conv2.weight"][0] // ch for i in levels)
        blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
        z_channels = shapes["encoder.conv_out.weight"][0] // 2
        in_channels = shapes["encoder.conv_in.weight"][1]
        out_ch = shapes["decoder.conv_out.weight"][0]
    except KeyError as err:
        raise CheckpointError(f"{path}: not a FLUX autoencoder (missing {err.args[0]})") from None
    return VAEConfig(
        in_channels=in_channels,
        out_ch=out_ch,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        z_channels=z_channels,
    )


# A VAE trained by `unimedvl train-autoencoder`: its report (ae.json beside ae.safetensors) holds what
# the weights cannot: the latent statistics and the latent_patch_size it was made for.


def latent_stats_config(vae_cfg: VAEConfig, report: Mapping[str, Any] | str | os.PathLike) -> VAEConfig:
    """``vae_cfg`` with shift_factor / scale_factor from a training report (a dict or the JSON file).

    Use it where a unified checkpoint's config is assembled from a trained ``ae.safetensors``,
    e.g. ``cfg.vae = latent_stats_config(vae_config_from_file(ae), "ae.json")`` before writing
    ``unimedvl_config.yaml``. A layout that differs from the one the report was measured on is a
    ConfigError (the statistics belong to those weights).
    """
    source = "report"
    if not isinstance(report, Mapping):
        source = os.fspath(report)
        try:
            report = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such report (train_autoencoder writes it beside ae.safetensors)") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{source}:{err.lineno}: invalid JSON ({err.msg})") from None
    missing = [k for k in ("shift_factor", "scale_factor") if k not in report]
    if missing:
        raise ConfigError(f"{source}: missing {', '.join(missing)}; is this an autoencoder training report?")
    if "vae" in report:
        measured = from_dict(VAEConfig, dict(report["vae"]), source=f"{source}: vae")
        for key in ("ch", "ch_mult", "num_res_blocks", "z_channels", "in_channels", "out_ch"):
            if getattr(measured, key) != getattr(vae_cfg, key):
                raise ConfigError(
                    f"{source}: the statistics were measured on a VAE with {key}={getattr(measured, key)}, "
                    f"but this config has {key}={getattr(vae_cfg, key)}; use the report written with these weights"
                )
    return dataclasses.replace(
        vae_cfg, shift_factor=float(report["shift_factor"]), scale_factor=float(report["scale_factor"])
    )


def trained_vae_config(weights: str | os.PathLike, report: str | os.PathLike | None = None) -> VAEConfig:
    """The complete VAEConfig of a trained ``ae.safetensors``: layout from its shapes, shift / scale from its report.

    ``report`` defaults to the file beside the weights with the suffix .json (where
    ``train_autoencoder`` writes it); a missing report is a ConfigError rather than a silent
    fallback to the release factors, which would mis-scale every latent.
    """
    weights = Path(weights)
    return latent_stats_config(vae_config_from_file(weights), report or weights.with_suffix(".json"))


def trained_latent_patch_size(weights: str | os.PathLike, report: str | os.PathLike | None = None) -> int:
    """The unified model's ``latent_patch_size`` a trained ``ae.safetensors`` was made for (from its report)."""
    path = Path(report or Path(weights).with_suffix(".json"))
    try:
        return int(json.loads(path.read_text())["latent_patch_size"])
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such report (train_autoencoder writes it beside ae.safetensors)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: no valid latent_patch_size; is this an autoencoder training report?") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


# ---------------------------------------------------------------------------------------------
# Tensors.


_open = open_file  # a safetensors handle, or a CheckpointError naming the file


@dataclass
class WeightSource:
    """Where each tensor of a checkpoint lives: key -> file."""

    files: dict[str, Path]  # key -> file

    def keys(self) -> set[str]:
        return set(self.files)


def find_weights(path: Path, prefer: str = "ema", require_all: bool = True) -> WeightSource:
    """Locate the unified-model weights: ema/model.safetensors or a sharded index.

    ``require_all=False`` accepts an index whose shards are not all present: a loader that needs
    only some tensors (components="understanding") reports a missing shard only if it needs it.
    """
    order = {"ema": ["ema.safetensors", "model.safetensors"], "model": ["model.safetensors", "ema.safetensors"]}
    if prefer not in order:
        raise ConfigError(f"prefer={prefer!r}; choose 'ema' or 'model'")
    for name in order[prefer]:
        if (path / name).is_file():
            with _open(path / name) as f:
                return WeightSource({k: path / name for k in f.keys()})
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if indexes:
        index = _read_json(indexes[0])
        files = shard_files(indexes[0], index.get("weight_map") if isinstance(index, dict) else None)
        missing = sorted({f.name for f in set(files.values()) if not f.is_file()})
        if missing and require_all:
            shown = ", ".join(capped(m, 80) for m in missing[:6]) + (" ..." if len(missing) > 6 else "")
            raise CheckpointError(f"{indexes[0]}: shard file(s) missing: {shown}")
        return WeightSource(files)
    if (path / "adapter_config.json").is_file():
        raise CheckpointError(
            f"{path}: a LoRA step directory: merge it into its base (unimedvl merge-adapter) or "
            "load it with --model / from_pretrained, which add it to the base it names"
        )
    raise CheckpointError(
        f"{path}: no weights; expected ema.safetensors, model.safetensors or a *.safetensors.index.json"
    )


def load_into(
    model: nn.Module,
    source: WeightSource,
    where: str,
    dtype: torch.dtype,
    device: torch.device | str | Placement,
    exclude: str | None = None,
    optional: tuple[str, ...] = (),
    ignore: Callable[[str], bool] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Stream tensors from ``source`` into ``model`` (built on meta) with a strict key check.

    Keys under ``exclude`` are loaded elsewhere; keys in ``optional`` may be absent; keys in
    ``skip`` are filled by the caller and never read; keys of the source for which ``ignore(key)``
    holds are not read (e.g. the generation expert of an understanding-only load). ``device`` may
    be a :class:`~unimedvl.checkpoint.weight_stream.Placement`.
    """
    placement = device if isinstance(device, Placement) else Placement(torch.device(device))
    expected = [k for k in model.state_dict() if not (exclude and k.startswith(exclude))]
    wanted = set(expected)
    got = source.keys()
    missing = sorted(k for k in expected if k not in got and k not in optional)
    unexpected = sorted(k for k in got if k not in wanted and not (ignore and ignore(k)))
    if missing or unexpected:
        lines = []
        if missing:
            lines.append(f"missing {len(missing)} key(s): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            lines.append(
                f"unexpected {len(unexpected)} key(s): {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}"
            )
        raise CheckpointError(
            f"{where}: weights do not match the model config ({'; '.join(lines)}). Check that the config "
            "files belong to these weights (layer_module, num_hidden_layers, visual_gen/visual_und)"
        )
    stream_into(model, source.files, [k for k in expected if k in got and k not in skip], where, dtype, placement)


def save_tensors(state: Mapping[str, Tensor], path: Path) -> None:
    """Write safetensors atomically (temporary name, then rename); shared storage is copied."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        out[key] = tensor
    with atomic_path(path, fsync=False) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt"})


def write_configs(cfg: ModelConfig, path: Path) -> None:
    """Write llm_config.json, vit_config.json and our complete unimedvl_config.yaml."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "llm_config.json").write_text(json.dumps(llm_config_to_hf(cfg.llm), indent=2))
    if cfg.visual_und:
        (path / "vit_config.json").write_text(json.dumps(vit_config_to_hf(cfg), indent=2))
    save_yaml(to_dict(cfg), path / CONFIG_FILE)


# ---------------------------------------------------------------------------------------------
# The unified model.


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    prefer: str = "ema",
    config: ModelConfig | None = None,
    plan: LoadPlan | None = None,
):
    """Build a UnifiedModel on the meta device and stream a checkpoint directory into it.

    ``prefer``: ``ema`` (default; falls back to model.safetensors) or ``model`` (raw weights).
    ``config`` overrides the directory's config (e.g. another attention backend). ``plan``: what
    to load, in which precision and where (default: everything, ``dtype``, on ``device``); with
    ``components="understanding"`` the generation tensors and ``ae.safetensors`` are never read.
    The model's ``load_plan`` attribute records the plan.
    """
    from unimedvl.checkpoint.placement import plan_layout
    from unimedvl.models.embeddings import PositionEmbedding
    from unimedvl.models.unified import UnifiedModel

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    plan = plan or LoadPlan()
    cfg = config or read_model_config(path)
    if plan.understanding_only:
        cfg = understanding_config(cfg)
    torch_dtype = parse_dtype(dtype)
    source = find_weights(path, prefer, require_all=not plan.understanding_only)
    with torch.device("meta"):
        model = UnifiedModel(cfg)
    check_weight_shapes(model, source, str(path), torch_dtype)  # before anything is allocated
    layout = plan_layout(model, plan, torch.device(device), torch_dtype)
    device = layout.device
    for module in model.modules():
        if isinstance(module, PositionEmbedding):
            # Recomputed from the formula (checkpoints may omit them or store another size), first:
            # the float64 arithmetic's temporaries then do not add to the peak of the loaded weights.
            module._buffers["pos_embed"] = torch.empty_like(module.pos_embed, device=device, dtype=torch_dtype)
            module.reset_parameters()
    ignore = is_generation_key if plan.understanding_only else None
    load_into(
        model,
        source,
        str(path),
        torch_dtype,
        layout.placement(model, plan.quantize, torch_dtype),
        exclude=VAE_PREFIX,
        optional=RECOMPUTED_KEYS,
        ignore=ignore,
        skip=RECOMPUTED_KEYS,
    )
    if cfg.visual_gen:
        ae_file = path / "ae.safetensors"
        if not ae_file.is_file():
            raise CheckpointError(f"{path}: visual_gen is on but ae.safetensors is missing")
        with _open(ae_file) as f:
            ae = WeightSource({k: ae_file for k in f.keys()})
        load_into(model.vae, ae, str(ae_file), torch_dtype, device)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise CheckpointError(f"{path}: no weights for {', '.join(leftover[:6])}")
    layout.attach(model)
    model.load_plan = plan
    return model


MAX_TABLE_BYTES = 2 << 30  # a recomputed position table above this is a config mistake (the release's: 58 MB)


def check_weight_shapes(model: nn.Module, source: WeightSource, where: str, dtype: torch.dtype = torch.float32) -> None:
    """Before allocation: the model's (meta) tensors against the safetensors headers, and the size of the
    position tables, which no file bounds (``max_latent_size``, ``vit_max_num_patch_per_side``)."""
    from unimedvl.models.embeddings import PositionEmbedding

    check_header_shapes(
        {k: tuple(t.shape) for k, t in model.state_dict().items() if k not in RECOMPUTED_KEYS}, source.files, where
    )
    for name, module in model.named_modules():
        if isinstance(module, PositionEmbedding):
            size = module.pos_embed.numel() * max(dtype.itemsize, 4)
            if size > MAX_TABLE_BYTES:
                side = module.max_num_patch_per_side
                raise ConfigError(
                    f"{where}: the position table {name} would take {size / 2**30:.0f} GiB "
                    f"({side} x {side} positions x {module.hidden_size}); the config's max_latent_size "
                    "/ vit_max_num_patch_per_side or hidden_size is far too large"
                )


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The unified model's weights without the VAE (what ema/model.safetensors hold)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(VAE_PREFIX)}


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per component (language_model, vit_model, vae, ...) and in total (works on meta)."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts = {name: n for name, n in counts.items() if n}
    counts["total"] = sum(counts.values())
    return counts


def save_model(
    model,
    path: str | Path,
    tokenizer=None,
    ema_state: Mapping[str, Tensor] | None = None,
    inference_config=None,
    card=None,
) -> Path:
    """Write ``model`` in the release layout plus our complete config, inference config and model card.

    ``ema.safetensors`` holds ``ema_state`` when given (and ``model.safetensors`` the raw
    weights), else the model's weights; ``ae.safetensors`` the VAE; tokenizer files if given.
    ``inference_config`` (an :class:`~unimedvl.checkpoint.inference_config.InferenceConfig`; default: the
    release's, fitted to this model's position tables) goes to ``inference_config.json``, and
    ``card`` (a :class:`~unimedvl.checkpoint.model_card.ModelCard`; default: a generic one) to ``README.md``.
    """
    from unimedvl.checkpoint.inference_config import for_model
    from unimedvl.checkpoint.model_card import ModelCard

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_configs(model.config, path)
    raw = model_state(model)
    if ema_state is not None:
        save_tensors({k: v for k, v in ema_state.items() if not k.startswith(VAE_PREFIX)}, path / "ema.safetensors")
        save_tensors(raw, path / "model.safetensors")
    else:
        save_tensors(raw, path / "ema.safetensors")
        (path / "model.safetensors").unlink(missing_ok=True)
    if model.config.visual_gen:
        save_tensors(model.vae.state_dict(), path / "ae.safetensors")
    if tokenizer is not None:
        tokenizer.save(path)
    inference_config = for_model(model.config, inference_config)
    inference_config.save(path)
    (card or ModelCard()).write(path, model.config, inference_config, parameter_counts(model))
    return path
