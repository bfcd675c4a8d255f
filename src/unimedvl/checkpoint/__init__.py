"""Checkpoints: the release layout and everything about loading one, and what loading costs.

- ``release``: the layout (configs, safetensors, trained-VAE reports), ``load_model`` / ``save_model``;
- ``create``: random checkpoints of a named size, or one assembled from public parts;
- ``weight_stream``: safetensors streamed into a meta model block by block (bounded host memory);
- ``memory_plan``, ``placement``, ``quantization``: what to load and how (components, int8/nf4,
  offload, device maps); ``memory_estimate`` and ``train_memory``: what that costs, for inference
  and for a fine-tune;
- ``inference_config``: how a checkpoint is fed and sampled (inference_config.json, its presets);
- ``model_card``: the checkpoint's README.md; ``adapters``: LoRA adapter checkpoints.

``from unimedvl.checkpoint import load_model`` (and the other names of ``release``) keeps working:
they are imported on first use, so importing a submodule does not load torch or safetensors.
"""

from __future__ import annotations

import importlib

_RELEASE_NAMES = (
    "CONFIG_FILE",
    "DTYPES",
    "MAX_TABLE_BYTES",
    "RECOMPUTED_KEYS",
    "RELEASE_IMPLIED",
    "VAE_PREFIX",
    "WEIGHT_FILES",
    "WeightSource",
    "check_weight_shapes",
    "find_weights",
    "latent_stats_config",
    "llm_config_to_hf",
    "load_into",
    "load_model",
    "model_state",
    "parameter_counts",
    "parse_dtype",
    "read_model_config",
    "save_model",
    "save_tensors",
    "trained_latent_patch_size",
    "trained_vae_config",
    "vae_config_from_file",
    "vit_config_to_hf",
    "write_configs",
)
__all__ = sorted(_RELEASE_NAMES)


def __getattr__(name: str):
    if name in _RELEASE_NAMES:
        return getattr(importlib.import_module("unimedvl.checkpoint.release"), name)
    raise AttributeError(f"module 'unimedvl.checkpoint' has no attribute {name!r}")
