"""The model card: ``README.md`` beside a checkpoint's weights, like a hub model card.

Says what the checkpoint is, how large, how it must be fed (the transforms of
``inference_config.json``), what it was trained on and with which command, what it is for, and
that it is not for clinical use. Written by every command that writes a checkpoint; plain
Markdown with a small YAML header (the hub's convention), regenerated, never edited in place.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimedvl.checkpoint.inference_config import InferenceConfig
from unimedvl.fileio import atomic_write_text

MODEL_CARD_FILE = "README.md"

INTENDED_USE = (
    "Research on medical image understanding (visual question answering, report writing, image quality "
    "assessment) and generation (restoration, super-resolution, stain translation, modality synthesis, "
    "counterfactuals), and as a starting point for fine-tuning on your own data."
)
NOT_CLINICAL = (
    "**Not for clinical use.** This is a research model. Its answers and images have not been validated for "
    "diagnosis, treatment or any decision about a patient, and it can be confidently wrong. Generated or "
    "restored images may contain structures that are not in the patient."
)


def command_line() -> str | None:
    """The command that is running, as a user would type it (None from Python code: no command line)."""
    argv = list(sys.argv)
    if not argv or argv[0] in ("", "-", "-c"):
        return None
    if argv and argv[0].endswith(("unimedvl", "cli.py", "__main__.py")):
        argv[0] = "unimedvl" if argv[0].endswith("unimedvl") else f"python -m {_module_of(argv[0])}"
    return " ".join(shlex.quote(a) for a in argv)


def _module_of(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    if "unimedvl" in parts:
        parts = parts[parts.index("unimedvl") :]
    if parts and parts[-1] == "__main__":
        parts = parts[:-1]
    return ".".join(parts) or path


@dataclass
class ModelCard:
    """What a checkpoint's README.md says beyond what the configs hold."""

    summary: str = "A UniMedVL checkpoint: a unified medical vision-language model."  # first paragraph
    command: str | None = field(default_factory=command_line)  # the command that wrote the checkpoint
    training: Mapping[str, Any] | None = None  # steps, data mix, datasets, started from, seed
    notes: list[str] = field(default_factory=list)  # extra lines (e.g. "random weights: for tests")

    def render(self, model_cfg, inference: InferenceConfig, parameters: Mapping[str, int], name: str) -> str:
        lines = [
            "---",
            "library_name: unimedvl",
            "tags: [medical, vision-language, image-generation, unimedvl]",
            "---",
            "",
            f"# {name}",
            "",
            self.summary,
            "",
            NOT_CLINICAL,
            "",
        ]
        lines += [*self.notes, ""] if self.notes else []
        lines += ["## Model", ""]
        llm = model_cfg.llm
        lines.append(
            f"- language model: {llm.num_hidden_layers} layers, hidden {llm.hidden_size}, "
            f"{llm.num_attention_heads} heads / {llm.num_key_value_heads} KV heads, vocabulary "
            f"{llm.vocab_size}, `{llm.layer_module}`"
        )
        if model_cfg.visual_und:
            vit = model_cfg.vit
            lines.append(
                f"- vision encoder (understanding): SigLIP NaViT, {vit.num_hidden_layers} layers, hidden "
                f"{vit.hidden_size}, patch {vit.patch_size}"
            )
        if model_cfg.visual_gen:
            vae = model_cfg.vae
            lines.append(
                f"- autoencoder (generation): FLUX layout, ch {vae.ch}, ch_mult {list(vae.ch_mult)}, "
                f"z_channels {vae.z_channels}, latent patch {model_cfg.latent_patch_size}"
            )
        lines.append("- parameters: " + ", ".join(f"{k} {human_count(v)}" for k, v in parameters.items()))
        lines += ["", "## How it is fed (`inference_config.json`)", ""]
        for what, t in (
            ("every input image (VAE rule)", inference.vae_transform),
            ("understanding inputs (ViT)", inference.vit_transform),
        ):
            cap = f", at most {t.max_pixels:,} pixels" if t.max_pixels else ""
            lines.append(
                f"- {what}: short edge >= {t.min_image_size} px, long edge <= {t.max_image_size} px, sides "
                f"multiples of {t.image_stride}{cap}"
            )
        lines += [
            "",
            "| guidance preset | cfg_text | cfg_img | interval | renorm | shift | steps | strength |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for preset, g in inference.guidance.items():
            lines.append(
                f"| {preset} | {g.cfg_text_scale:g} | {g.cfg_img_scale:g} | [{g.cfg_interval[0]:g}, "
                f"{g.cfg_interval[1]:g}] | {g.cfg_renorm_type} (min {g.cfg_renorm_min:g}) | "
                f"{g.timestep_shift:g} | {g.num_timesteps} | {g.strength:g} |"
            )
        if self.training:
            lines += ["", "## Training", ""]
            lines += [f"- {key.replace('_', ' ')}: {_value(value)}" for key, value in self.training.items()]
        if self.command:
            lines += ["", "## Made with", "", "```", self.command, "```"]
        lines += [
            "",
            "## Intended use",
            "",
            INTENDED_USE,
            "",
            "Load it with `unimedvl ask|edit|generate|chat|serve|api|eval --model DIR` or "
            "`UniMedVL.from_pretrained(DIR)`; `unimedvl info --model DIR` prints its settings.",
            "",
        ]
        return "\n".join(lines)

    def write(
        self, directory: str | os.PathLike[str], model_cfg, inference: InferenceConfig, parameters: Mapping[str, int]
    ) -> Path:
        path = Path(directory) / MODEL_CARD_FILE
        atomic_write_text(path, self.render(model_cfg, inference, parameters, card_title(directory)))
        return path


TEMPORARY_PREFIX = ".tmp-"  # a save is written under .tmp-NAME and renamed to NAME when complete


def card_title(directory: str | os.PathLike[str]) -> str:
    """The card's title: the checkpoint folder's name, as it will be once its save is renamed into place."""
    name = Path(directory).resolve().name
    return name[len(TEMPORARY_PREFIX) :] if name.startswith(TEMPORARY_PREFIX) else name


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return (
        f"`{value}`" if isinstance(value, str) and ("/" in value or value.endswith((".yaml", ".jsonl"))) else str(value)
    )


def human_count(n: int) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
