"""How a checkpoint must be fed and sampled: ``inference_config.json`` beside its weights.

A model trained at 64 px must be fed 64 px images; one trained at the release's sizes must be fed
those. Like a Hugging Face preprocessor config, this small file travels with the weights so that
``ask``, ``edit``, ``generate``, ``chat``, ``serve``, ``api``, ``eval`` and ``validate-data`` need no
size flags. Written by the trainer (the training mix's transforms), ``init-checkpoint``,
``init-from-components`` and ``train-autoencoder``; an explicit flag overrides a value; a release
directory without the file gets the release defaults (:data:`RELEASE`).

Schema (every key optional; a missing one takes the release default)::

    {"format": "unimedvl-inference-config", "version": 1,
     "vae_transform": {"image_stride": 16, "max_image_size": 1024, "min_image_size": 512, "max_pixels": 1806336},
     "vit_transform": {"image_stride": 14, "max_image_size": 980, "min_image_size": 378, "max_pixels": 1806336},
     "guidance": {"text_to_image": {GuidanceConfig fields}, "editing": {...}, "restoration": {...},
                  "editing_fast": {...}, ...},
     "think_prompts": "release" | "unimedvl" | "concise" | {"understand": "...", "generate": "..."}}

``max_pixels`` is kept as the file gives it (``null``: no cap); a transform without the key gets the
release's cap, :data:`RELEASE_MAX_PIXELS`.

``vae_transform`` is the resize rule every input image goes through first (then the ViT
transform, for understanding); ``guidance`` holds the sampling defaults per task: ``editing`` for
``edit``, ``text_to_image`` for ``generate``, ``restoration`` for batch evaluation (the medical
batch test). A ``NAME_fast`` entry (optional) is a fast variant of preset NAME (a solver and step
cache, :mod:`unimedvl.sampling`), starting from NAME's reference values; ``preset("edit_fast")``
returns it and ``info --model`` shows it beside the reference. ``think_prompts`` (optional) replaces the thinking-mode system prompts (default: the
release's wording, see :data:`THINK_PROMPT_SETS`).

Torch-free, so that ``--help`` can show the defaults quickly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimedvl.config import from_dict, unknown_keys_message
from unimedvl.errors import ConfigError
from unimedvl.fileio import atomic_write_text
from unimedvl.guidance import (
    GUIDANCE_PRESETS,
    PRESET_NAMES,
    GuidanceConfig,
    reference_preset,
    resolve_guidance,
    task_preset_names,
)
from unimedvl.guidance import (
    TASK_PRESETS as TASK_PRESETS,  # re-exported: the old home of the table
)
from unimedvl.imaging.transforms import ImageTransform

INFERENCE_CONFIG_FILE = "inference_config.json"
FORMAT = "unimedvl-inference-config"
VERSION = 1

# The release's transforms (spec unified-model.md section 5). The pixel cap is what the reference's
# inference and evaluation entry points feed the released weights with: they build both transforms
# without a max_pixels argument, so both take that ImageTransform's default, 14 * 14 * 9 * 1024. It
# decides the size of very elongated images only (aspect 7.5:1 or more at the VAE's min 512; 147 of
# 6,016 ViT sizes); the training mixes' ViT cap, 2,007,040, stays with the mixes.
RELEASE_MAX_PIXELS = 14 * 14 * 9 * 1024  # 1,806,336
RELEASE_VAE_TRANSFORM = ImageTransform(
    image_stride=16, max_image_size=1024, min_image_size=512, max_pixels=RELEASE_MAX_PIXELS
)
RELEASE_VIT_TRANSFORM = ImageTransform(
    image_stride=14, max_image_size=980, min_image_size=378, max_pixels=RELEASE_MAX_PIXELS
)

# Inference task -> the guidance preset it samples with: unimedvl.guidance.TASK_PRESETS (re-exported here).
THINK_TASKS = ("understand", "generate")
_KEYS = ("format", "version", "vae_transform", "vit_transform", "guidance", "think_prompts")


# Thinking-mode system prompts: part of the model's interface, like its special tokens. The
# default is the wording the released BAGEL-7B-MoT / UniMedVL weights were trained and evaluated with
# (the public BAGEL inferencer's VLM_THINK_SYSTEM_PROMPT and GEN_THINK_SYSTEM_PROMPT, verbatim,
# including the space before each newline); "unimedvl" is the wording of the UniMedVL repository's
# inferencer; "concise" is this project's own. A checkpoint's inference_config.json may name a set or
# give its own prompts (either may be given as a set name); ``Inferencer(think_prompts=...)`` overrides both.
THINK_PROMPT_SETS: dict[str, dict[str, str]] = {
    "release": {
        "understand": (
            "You should first think about the reasoning process in the mind and then provide the user with the "
            "answer. \nThe reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning "
            "process here </think> answer here"
        ),
        "generate": (
            "You should first think about the planning process in the mind and then generate the image. \nThe "
            "planning process is enclosed within <think> </think> tags, i.e. <think> planning process here "
            "</think> image here"
        ),
    },
    "unimedvl": {
        "understand": (
            "You should first think about the reasoning process in the mind and then provide the user with the "
            "answer.\nThe reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning "
            "process here </think> answer here"
        ),
        "generate": (
            "You should first think about the planning process in your mind, and then generate the image.\nThe "
            "planning process is enclosed within <think> </think> tags; that is, <think> planning process here "
            "</think> image here.\n"
        ),
    },
    "concise": {
        "understand": (
            "Reason about the question step by step before answering. Write the reasoning between <think> "
            "and </think>, then give the final answer after </think>."
        ),
        "generate": (
            "Before producing the image, reason about it: describe between <think> and </think> what the "
            "output image must show (modality, anatomy, the requested change). The image follows the reasoning."
        ),
    },
}


def resolve_think_prompts(value: str | Mapping[str, str], source: str = "think_prompts") -> dict[str, str]:
    """A set name (release, unimedvl, concise) or a mapping task -> prompt, as a mapping."""
    if isinstance(value, str):
        if value not in THINK_PROMPT_SETS:
            raise ConfigError(
                f"{source}: unknown prompt set {value!r}; choose one of {', '.join(THINK_PROMPT_SETS)} "
                "or give {understand: ..., generate: ...}"
            )
        return dict(THINK_PROMPT_SETS[value])
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{source}: give a prompt set name or map understand/generate to strings")
    bad = sorted(set(value) - set(THINK_TASKS))
    if bad:
        raise ConfigError(f"{source}: think_prompts keys {bad}; use {list(THINK_TASKS)}")
    return dict(value)


def _release_guidance() -> dict[str, GuidanceConfig]:
    return dict(GUIDANCE_PRESETS)


def evaluated_presets(strength: float, num_timesteps: int) -> dict[str, GuidanceConfig]:
    """Presets that reproduce an evaluation run with the restoration settings at this SDEdit ``strength`` and
    step count (what the demo's checkpoints carry): ``edit`` and ``eval`` as evaluated, ``generate`` at the
    same number of steps (from pure noise: text-to-image has no input image)."""
    evaluated = dataclasses.replace(GUIDANCE_PRESETS["restoration"], strength=strength, num_timesteps=num_timesteps)
    text_to_image = dataclasses.replace(GUIDANCE_PRESETS["text_to_image"], num_timesteps=num_timesteps)
    return {"text_to_image": text_to_image, "editing": evaluated, "restoration": evaluated}


@dataclass(frozen=True)
class InferenceConfig:
    """The transforms and sampling defaults of one checkpoint (see the module docstring)."""

    vae_transform: ImageTransform = RELEASE_VAE_TRANSFORM  # resize rule of every input image (and VAE inputs)
    vit_transform: ImageTransform = RELEASE_VIT_TRANSFORM  # transform of the ViT (understanding) inputs
    guidance: Mapping[str, GuidanceConfig] = field(default_factory=_release_guidance)  # preset name -> settings
    think_prompts: Mapping[str, str] | None = (
        None  # a set name or task (understand | generate) -> prompt; None: release
    )
    source: str = "release defaults"  # where it was read from (not saved)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.guidance) - set(PRESET_NAMES))
        if unknown:
            raise ConfigError(f"{self.source}: unknown guidance preset(s) {unknown}; known: {list(PRESET_NAMES)}")
        if self.think_prompts is not None:
            object.__setattr__(self, "think_prompts", resolve_think_prompts(self.think_prompts, self.source))

    # -- reading ------------------------------------------------------------------------------

    def preset(self, task: str) -> GuidanceConfig:
        """The guidance defaults of an inference task (edit, generate, eval) or a preset name; TASK_fast
        (e.g. ``edit_fast``) is the checkpoint's fast variant, when it carries one."""
        return self.guidance_for(task)

    def guidance_for(
        self, task: str, overrides: Mapping[str, Any] | None = None, preset: str | None = None
    ) -> GuidanceConfig:
        """The guidance a ``task`` request samples with: this checkpoint's preset for it (or the named
        ``preset``, e.g. ``editing_fast``) with the user's ``overrides`` (None values: not given) over it.
        :func:`unimedvl.guidance.resolve_guidance` does the merge; every front end calls this."""
        return resolve_guidance(task, self.guidance, overrides, preset, self.source)

    def preset_names(self, task: str) -> list[str]:
        """The presets a user may pick for ``task``: its own, then its fast variant when this checkpoint has one."""
        return task_preset_names(task, self.guidance)

    @property
    def image_size(self) -> int:
        """Side of a generated image when none is asked for: the largest side the model is fed."""
        return self.vae_transform.max_image_size

    def with_sizes(
        self,
        vae_min_size: int | None = None,
        vae_max_size: int | None = None,
        vit_min_size: int | None = None,
        vit_max_size: int | None = None,
        max_pixels: int | None = None,
    ) -> InferenceConfig:
        """A copy with the sizes that were given explicitly (None keeps the checkpoint's)."""
        vae = _resized(self.vae_transform, vae_min_size, vae_max_size, max_pixels)
        vit = _resized(self.vit_transform, vit_min_size, vit_max_size, max_pixels)
        if (vae, vit) == (self.vae_transform, self.vit_transform):
            return self
        return dataclasses.replace(self, vae_transform=vae, vit_transform=vit, source=f"{self.source} + flags")

    # -- files --------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "vae_transform": dataclasses.asdict(self.vae_transform),
            "vit_transform": dataclasses.asdict(self.vit_transform),
            "guidance": {name: g.to_json() for name, g in self.guidance.items()},
        }
        if self.think_prompts is not None:
            out["think_prompts"] = dict(self.think_prompts)
        return out

    @classmethod
    def from_json(cls, obj: Any, source: str = "<json>") -> InferenceConfig:
        if not isinstance(obj, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{source}: {unknown_keys_message(unknown, _KEYS)}")
        if obj.get("format", FORMAT) != FORMAT or int(obj.get("version", VERSION)) > VERSION:
            raise ConfigError(
                f"{source}: format {obj.get('format')!r} version {obj.get('version')!r} is not one this "
                f"unimedvl reads ({FORMAT} <= {VERSION}); upgrade unimedvl"
            )
        kwargs: dict[str, Any] = {"source": source}
        for key in ("vae_transform", "vit_transform"):
            if key in obj:
                args = obj[key]
                if isinstance(args, Mapping) and "max_pixels" not in args:
                    args = {**args, "max_pixels": RELEASE_MAX_PIXELS}  # a missing key takes the release default
                kwargs[key] = ImageTransform.from_config(args, source=f"{source}: {key}")
        if "guidance" in obj:
            if not isinstance(obj["guidance"], Mapping):
                raise ConfigError(f"{source}: guidance must map preset names to settings")
            guidance = _release_guidance()
            for name, values in obj["guidance"].items():
                if name not in PRESET_NAMES:
                    raise ConfigError(f"{source}: unknown guidance preset {name!r}; known: {list(PRESET_NAMES)}")
                base = dataclasses.asdict(reference_preset(name))
                guidance[name] = from_dict(
                    GuidanceConfig, {**base, **dict(values)}, source=f"{source}: guidance.{name}"
                )
            kwargs["guidance"] = guidance
        if obj.get("think_prompts") is not None:
            kwargs["think_prompts"] = resolve_think_prompts(obj["think_prompts"], f"{source}: think_prompts")
        return cls(**kwargs)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        path = Path(directory) / INFERENCE_CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> InferenceConfig:
        """The config of a checkpoint directory; the release defaults when it has no file."""
        path = Path(directory) / INFERENCE_CONFIG_FILE
        if not path.is_file():
            return cls(source=f"{directory} (no {INFERENCE_CONFIG_FILE}: release defaults)")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: unreadable ({err})") from None
        return cls.from_json(obj, source=str(path))


def _resized(t: ImageTransform, min_size: int | None, max_size: int | None, max_pixels: int | None) -> ImageTransform:
    changes: dict[str, Any] = {}
    if min_size is not None:
        changes["min_image_size"] = int(min_size)
    if max_size is not None:
        changes["max_image_size"] = int(max_size)
    if max_pixels is not None:
        changes["max_pixels"] = int(max_pixels)
    if not changes:
        return t
    if "max_image_size" in changes and "min_image_size" not in changes:
        changes["min_image_size"] = min(t.min_image_size, changes["max_image_size"])
    if "min_image_size" in changes and "max_image_size" not in changes:
        changes["max_image_size"] = max(t.max_image_size, changes["min_image_size"])
    return dataclasses.replace(t, **changes)


def with_pixel_cap(data: ImageTransform | None, base: ImageTransform) -> ImageTransform:
    """A training mix's transform (None: ``base``) with ``base``'s pixel cap when the mix sets none: what
    a trained checkpoint records, so it is fed like the checkpoint it started from (the release's cap)."""
    if data is None:
        return base
    return data if data.max_pixels is not None else dataclasses.replace(data, max_pixels=base.max_pixels)


def fitted_transform(t: ImageTransform, table_side: int, interpolate: bool = False) -> ImageTransform:
    """``t`` with max_image_size lowered to what a position table of ``table_side`` patches holds."""
    limit = table_side * t.image_stride
    if interpolate or t.max_image_size <= limit:
        return t
    return dataclasses.replace(t, max_image_size=limit, min_image_size=min(t.min_image_size, limit))


def for_model(model_cfg, base: InferenceConfig | None = None) -> InferenceConfig:
    """``base`` (default: the release's) with its transforms fitted to a model's strides and tables.

    What ``init-checkpoint`` / ``init-from-components`` write: a model whose latent table holds
    32 x 16 px gets a VAE max size of 512 rather than a warning at every load.
    """
    base = base or InferenceConfig()
    vae = dataclasses.replace(base.vae_transform, image_stride=model_cfg.vae_image_stride)
    vit = dataclasses.replace(base.vit_transform, image_stride=model_cfg.vit.patch_size)
    vae = fitted_transform(vae, model_cfg.max_latent_size, model_cfg.interpolate_pos)
    vit = fitted_transform(vit, model_cfg.vit_max_num_patch_per_side, model_cfg.interpolate_pos)
    return dataclasses.replace(base, vae_transform=vae, vit_transform=vit, source="fitted to the model")
