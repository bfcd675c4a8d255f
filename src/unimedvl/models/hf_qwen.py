"""Reading Hugging Face Qwen2 / Qwen2.5 / Qwen3 checkpoints: config.json -> LLMConfig, weight files -> tensors.

Also reads the release's ``llm_config.json`` (a Qwen2 config), with the values the release leaves
implied passed in by the caller (``checkpoint.RELEASE_IMPLIED``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unimedvl.config import LLMConfig
from unimedvl.errors import CheckpointError, ConfigError

_HF_MODEL_TYPES = ("qwen2", "qwen3")


def llm_config_from_hf(
    hf: Mapping[str, Any],
    source: str,
    layer_module: str | None = None,
    qk_norm: bool | None = None,
    implied: Mapping[str, Any] | None = None,
) -> LLMConfig:
    """LLMConfig from a HF Qwen2/Qwen3 ``config.json`` dict or a release ``llm_config.json``.

    Keys the file lacks come from ``implied`` when given (the release leaves qk_norm,
    layer_module and tie_word_embeddings unstated), else from what the model type means
    (Qwen3: qk-norm; Qwen2: q/k/v bias; one expert). Explicit arguments win over both.
    """
    implied = implied or {}
    model_type = hf.get("model_type", "qwen2")
    if model_type not in _HF_MODEL_TYPES:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported; expected one of {', '.join(_HF_MODEL_TYPES)}"
        )
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope_type {rope_type!r} is not supported (only the default RoPE)")
    if hf.get("use_sliding_window"):
        raise CheckpointError(f"{source}: use_sliding_window=true is not supported; set it to false")
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in required if k not in hf]
    if missing:
        raise CheckpointError(f"{source}: missing key(s) {', '.join(missing)}")
    if qk_norm is None:
        qk_norm = bool(hf.get("qk_norm", implied.get("qk_norm", model_type == "qwen3")))
    if layer_module is None:
        layer_module = hf.get("layer_module", implied.get("layer_module", "Qwen2DecoderLayer"))
    try:
        return LLMConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=hf["num_attention_heads"],
            num_key_value_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            head_dim=hf.get("head_dim") or 0,
            rope_theta=float(theta),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            qk_norm=qk_norm,
            # Qwen2 always has q/k/v bias; Qwen3 says so in attention_bias (default false).
            attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", implied.get("tie_word_embeddings", False))),
            layer_module=layer_module,
            hidden_act=hf.get("hidden_act", "silu"),
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None


def load_state_dict_files(path: Path) -> dict[str, Tensor]:
    """All tensors of a HF directory: model.safetensors, a sharded index, or pytorch_model.bin."""
    from safetensors.torch import load_file

    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        from unimedvl.fileio import shard_files

        data = json.loads(index.read_text())
        files = shard_files(index, data.get("weight_map") if isinstance(data, dict) else None)
        state: dict[str, Tensor] = {}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{index}: shard {shard.name} is listed but missing from {path}")
            state.update(load_file(shard))
        return state
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
