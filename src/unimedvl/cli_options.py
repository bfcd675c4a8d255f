"""Command-line options shared by several commands, derived from the config dataclasses.

One helper per group of options, so that every command spells an option the same way and its
help shows the same default. Torch-free: ``unimedvl COMMAND --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from unimedvl.config import field_docs
from unimedvl.guidance import RENORM_TYPES, GuidanceConfig


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_guidance_arguments(parser: argparse.ArgumentParser, defaults: GuidanceConfig, where: str = "") -> None:
    """One ``--cfg-text-scale``-style flag per :class:`GuidanceConfig` field, help text from its comment.

    Every flag defaults to None (not given), so :func:`guidance_overrides` can tell what the user
    set; ``defaults`` is the preset the command falls back to, and its values are shown in the help
    (``where`` says where they come from, e.g. "the editing preset").
    """
    group = parser.add_argument_group(f"guidance (defaults: {where})" if where else "guidance")
    docs = field_docs(GuidanceConfig)
    hints = typing.get_type_hints(GuidanceConfig)
    for f in dataclasses.fields(GuidanceConfig):
        kwargs: dict[str, Any] = {"dest": f.name, "default": None,
                                  "help": f"{docs.get(f.name, '')} (default: {_shown(getattr(defaults, f.name))})"}
        hint = hints[f.name]
        if f.name == "cfg_interval":
            kwargs.update(type=float, nargs=2, metavar=("LO", "HI"))
        elif f.name == "cfg_renorm_type":
            kwargs.update(choices=list(RENORM_TYPES))
        else:
            kwargs.update(type=hint)
        group.add_argument(_flag(f.name), **kwargs)


def guidance_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The guidance fields given on the command line (the rest keep the command's defaults)."""
    out = {}
    for f in dataclasses.fields(GuidanceConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if f.name == "cfg_interval" else value
    return out


def guidance_from_args(args: argparse.Namespace, base: GuidanceConfig) -> GuidanceConfig:
    """``base`` with the flags given on the command line applied (validated by GuidanceConfig)."""
    return dataclasses.replace(base, **guidance_overrides(args))
