"""Command-line options shared by several commands, derived from the config dataclasses.

One helper per group of options, so that every command spells an option the same way and its
help shows the same default. Torch-free: ``unimedvl COMMAND --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any

from unimedvl.config import field_docs
from unimedvl.defaults import MAX_NEW_TOKENS, TEMPERATURE, TOP_P
from unimedvl.guidance import CACHE_METHODS, FAST_SUFFIX, RENORM_TYPES, SOLVERS, GuidanceConfig, preset_name

DTYPE_CHOICES = ("fp32", "bf16", "fp16")
# Spellings of earlier releases: hidden, they still work for one release and say what replaced them.
SIZE_ALIASES = {
    "--min-image-size": "--vae-min-size",
    "--max-image-size": "--vae-max-size",
    "--vit-min-image-size": "--vit-min-size",
    "--vit-max-image-size": "--vit-max-size",
    "--vae-min": "--vae-min-size",
    "--vae-max": "--vae-max-size",
    "--vit-min": "--vit-min-size",
    "--vit-max": "--vit-max-size",
    "--vit-max-pixels": "--max-pixels",
}


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and adds "(default: X)" to a flag's help when it does not say it.

    Flags without a meaningful default (None, off switches, required ones) are left alone; their
    help says what happens when they are not given.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or action.required
            or not action.option_strings
            or isinstance(action, argparse._HelpAction)
        ):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(map(str, default)) or "none"
        else:
            shown = default
        return f"{text} (default: {shown})"


class _DeprecatedFlag(argparse.Action):
    """A hidden old spelling: stores into the new option and says once what to type instead."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, new: str, **kwargs) -> None:
    """Accept ``old`` (hidden from --help) as a spelling of the flag ``new``."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=_DeprecatedFlag, new_flag=new, help=argparse.SUPPRESS, **kwargs)


def add_device_arguments(parser, device_help: str = "") -> None:
    """``--device`` and ``--dtype``, spelled and defaulted the same in every command."""
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu"
        + (f"; {device_help}" if device_help else "")
        + ")",
    )
    parser.add_argument(
        "--dtype", default=None, choices=list(DTYPE_CHOICES), help="weights dtype (default: bf16 on cuda, fp32 on cpu)"
    )


def add_size_arguments(parser) -> None:
    """The transform sizes; unset, each takes the checkpoint's value (its inference_config.json)."""
    from unimedvl.checkpoint.inference_config import RELEASE_VAE_TRANSFORM as vae
    from unimedvl.checkpoint.inference_config import RELEASE_VIT_TRANSFORM as vit

    where = "default: the checkpoint's inference_config.json, else the release's"
    parser.add_argument(
        "--vae-min-size",
        type=int,
        default=None,
        metavar="PX",
        help=f"short edge of every input image at least this (VAE rule; 512 quality, 256 speed) "
        f"({where} {vae.min_image_size})",
    )
    parser.add_argument(
        "--vae-max-size",
        type=int,
        default=None,
        metavar="PX",
        help=f"long edge of every input image at most this (VAE rule) ({where} {vae.max_image_size})",
    )
    parser.add_argument(
        "--vit-min-size",
        type=int,
        default=None,
        metavar="PX",
        help=f"short edge of understanding (ViT) inputs at least this ({where} {vit.min_image_size})",
    )
    parser.add_argument(
        "--vit-max-size",
        type=int,
        default=None,
        metavar="PX",
        help=f"long edge of understanding (ViT) inputs at most this ({where} {vit.max_image_size})",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help=f"at most this many pixels per input image, both transforms ({where}: "
        f"{vae.max_pixels} for the VAE rule, {vit.max_pixels} for the ViT)",
    )
    for old, new in SIZE_ALIASES.items():
        add_deprecated_alias(parser, old, new, type=int)


def add_image_pixels_argument(parser, default: int | None = None, why: str = "") -> None:
    """``--max-image-pixels N``: images with more pixels (read from the file's header) are refused before
    decoding; ``default`` None means the library's (16384 x 16384)."""
    from unimedvl.imaging.pixel_limit import DEFAULT_LIMIT_TEXT, DEFAULT_MAX_IMAGE_PIXELS

    default = DEFAULT_MAX_IMAGE_PIXELS if default is None else default
    shown = DEFAULT_LIMIT_TEXT if default == DEFAULT_MAX_IMAGE_PIXELS else f"{default:,}"
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=default,
        metavar="N",
        help="refuse an input image with more pixels (width x height, read from its header before "
        f"anything is decoded: decompression bombs) (default: {shown}{why})",
    )


SIZE_FIELDS = ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size", "max_pixels")


def size_overrides(args: argparse.Namespace) -> dict[str, int | None]:
    """The size flags as keyword arguments of ``InferenceConfig.with_sizes`` / ``from_pretrained``."""
    return {name: getattr(args, name, None) for name in SIZE_FIELDS}


def add_memory_arguments(parser) -> None:
    """How the model is loaded (unimedvl.checkpoint.memory_plan): ``--components``, ``--quantize``, ``--offload``,
    ``--device-map``, ``--max-memory``; ``unimedvl info --memory`` shows what each plan needs."""
    from unimedvl.checkpoint.memory_plan import COMPONENTS, OFFLOADS, QUANTIZATIONS

    parser.add_argument(
        "--components",
        default="all",
        choices=list(COMPONENTS),
        help="what to load: all, or understanding (the understanding tower, ViT and connector only: "
        "about 55%% of the release's weights; editing and generation are then refused)",
    )
    parser.add_argument(
        "--quantize",
        default=None,
        choices=list(QUANTIZATIONS),
        help="weight-only quantisation of the large Linear layers as they load: int8 (CPU and "
        "CUDA) or nf4 (CUDA) (default: none; with --max-memory, whatever fits)",
    )
    parser.add_argument(
        "--offload",
        default=None,
        choices=list(OFFLOADS),
        help="cpu: keep the decoder layers in host memory and stream them to the GPU layer by layer "
        "(CUDA only; slow but exact) (default: none; with --max-memory, whatever fits)",
    )
    parser.add_argument(
        "--device-map",
        default=None,
        metavar="auto|balanced|JSON",
        help="spread the decoder layers over GPUs: auto (fill in order), balanced (even), or JSON "
        'such as \'{"0-13": "cuda:0", "14-27": "cuda:1"}\'; the rest goes with '
        "layer 0 (default: none, one device)",
    )
    parser.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="e.g. 24GB: load the cheapest plan whose weights, activations and KV cache fit this "
        "much device memory, and say which (default: none)",
    )


MEMORY_FIELDS = ("components", "quantize", "offload", "device_map", "max_memory")


def memory_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The memory flags as keyword arguments of ``UniMedVL.from_pretrained``."""
    return {name: getattr(args, name, None) for name in MEMORY_FIELDS if getattr(args, name, None) is not None}


def add_text_arguments(parser, max_new_tokens: int = MAX_NEW_TOKENS) -> None:
    """Answer decoding: ``--max-new-tokens``, ``--temperature``, ``--top-p`` (defaults: :mod:`unimedvl.defaults`)."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="answer (or reasoning) length limit")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=TOP_P, help="nucleus sampling mass (with --temperature > 0)")


def add_preset_argument(parser, task: str) -> None:
    """``--preset NAME``: the checkpoint's guidance preset to start from instead of the task's (e.g. its fast
    variant, ``editing_fast``); the guidance flags still override it."""
    name = preset_name(task)
    parser.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help=f"the checkpoint's guidance preset to start from, e.g. {name}{FAST_SUFFIX} (its fast "
        "variant: a solver and step cache, when the checkpoint carries one; `unimedvl info "
        f"--model DIR` lists them); the guidance flags still apply (default: {name})",
    )


STRENGTH_HELP = (
    "SDEdit start in (0, 1]: 1 samples from pure noise (the reference); below 1 sampling starts from "
    "the input image's latent noised to t = strength (shifted by --timestep-shift) and runs only that "
    "part of the schedule: it keeps more of the input and is faster, but can change it less"
)


def add_strength_argument(parser, default: float | None = None) -> None:
    """``--strength`` of image editing (edit, eval): where sampling starts, in (0, 1]; None: the preset's."""
    parser.add_argument(
        "--strength",
        type=float,
        default=default,
        metavar="S",
        help=STRENGTH_HELP + " (default: the checkpoint's preset: 1 for the release, the evaluated "
        "strength for a demo checkpoint)",
    )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


_CHOICES = {"cfg_renorm_type": RENORM_TYPES, "solver": SOLVERS, "cache": CACHE_METHODS}


def _flag_fields() -> list[dataclasses.Field]:
    """The GuidanceConfig fields with a guidance flag each (``--strength`` is its own flag, on edits only)."""
    return [f for f in dataclasses.fields(GuidanceConfig) if f.name != "strength"]


def add_guidance_arguments(parser: argparse.ArgumentParser, defaults: GuidanceConfig, where: str = "") -> None:
    """One ``--cfg-text-scale``-style flag per :class:`GuidanceConfig` field, help text from its comment.

    Every flag defaults to None (not given), so :func:`guidance_overrides` can tell what the user
    set; ``defaults`` is the preset the command falls back to, and its values are shown in the help
    (``where`` says where they come from, e.g. "the editing preset").
    """
    group = parser.add_argument_group(f"guidance (defaults: {where})" if where else "guidance")
    docs = field_docs(GuidanceConfig)
    hints = typing.get_type_hints(GuidanceConfig)
    for f in _flag_fields():
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": None,
            "help": f"{docs.get(f.name, '')} (default: {_shown(getattr(defaults, f.name))})",
        }
        hint = hints[f.name]
        if f.name == "cfg_interval":
            kwargs.update(type=float, nargs=2, metavar=("LO", "HI"))
        elif f.name in _CHOICES:
            kwargs.update(choices=list(_CHOICES[f.name]))
        else:
            kwargs.update(type=hint)
        group.add_argument(_flag(f.name), **kwargs)


def guidance_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The guidance fields given on the command line (the rest keep the command's defaults): the ``overrides``
    of :func:`unimedvl.guidance.resolve_guidance` (``InferenceConfig.guidance_for``)."""
    out = {}
    for f in _flag_fields():
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if f.name == "cfg_interval" else value
    return out
