"""``unimedvl ask | edit | generate | chat``: the inference commands.

::

    unimedvl ask --model DIR --image cxr.png --question "Is there an effusion?" [--think] [--json]
    unimedvl edit --model DIR --image ct.dcm --instruction "Remove the noise." --out clean.png
    unimedvl generate --model DIR --prompt "Axial T2 brain MRI." --out mri.png --height 512 --width 512
    unimedvl chat --model DIR          # then: /image PATH, questions, /think on|off, /reset, /quit

``chat`` reads stdin line by line, so a script can pipe a conversation into it; answers go to
stdout (one JSON object per answer with ``--json``), notices and errors to stderr. Denoising
shows a tqdm bar on stderr (``--no-progress`` hides it).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from unimedvl.commands.options import (
    add_device_arguments,
    add_image_pixels_argument,
    add_memory_arguments,
    add_preset_argument,
    add_size_arguments,
    add_text_arguments,
    memory_overrides,
    size_overrides,
)
from unimedvl.defaults import MAX_NEW_TOKENS
from unimedvl.errors import DataError

# The options, model loading and output the ask, edit, generate and chat commands share (one module each:
# unimedvl.commands.ask, ...); the docstring above is their --help description.

# ---------------------------------------------------------------------------------------------
# Options.


def inference_parser(subparsers, name: str, help: str) -> argparse.ArgumentParser:
    """The parser of ``unimedvl NAME`` (ask, edit, generate, chat): this module's docstring as its description,
    the model options and ``--json``."""
    parser = subparsers.add_parser(
        name, help=help, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    return parser


def model_options(parser: argparse.ArgumentParser, max_image_pixels: int | None = None, why: str = "") -> None:
    """--model, --device, --dtype, the image sizes, the pixel limit and the memory plan: shared by
    ask/edit/generate/chat, serve and api (the servers pass their own, lower, ``max_image_pixels`` default)."""
    g = parser.add_argument_group("model")
    g.add_argument(
        "--model",
        required=True,
        help="checkpoint directory (or a hub id when online); a LoRA step "
        "directory loads the base it names plus its adapter",
    )
    g.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="a LoRA run's step directory: its adapters applied to --model, which must be the base they "
        "were trained on; works with every memory plan (default: none)",
    )
    add_device_arguments(g)
    add_size_arguments(g)
    add_image_pixels_argument(g, max_image_pixels, why)
    add_memory_arguments(parser.add_argument_group("memory (unimedvl info --memory shows what each plan needs)"))


def text_options(parser: argparse.ArgumentParser) -> None:
    add_text_arguments(parser.add_argument_group("text decoding"))


def image_options(parser: argparse.ArgumentParser, task: str) -> None:
    from unimedvl.commands.options import add_guidance_arguments
    from unimedvl.guidance import TASK_GUIDANCE

    parser.add_argument("--out", required=True, help="output image file (.png, .jpg, ...)")
    parser.add_argument("--think", action="store_true", help="reason in text first (printed with the result)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="reasoning length limit (--think)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--no-progress", action="store_true", help="hide the denoising progress bar")
    add_preset_argument(parser, task)
    preset = {"edit": "the editing preset", "generate": "the text-to-image preset"}[task]
    add_guidance_arguments(parser, TASK_GUIDANCE[task], preset)


# ---------------------------------------------------------------------------------------------
# Loading and output.


def load_model(args):
    """The UniMedVL that :func:`model_options` describe (sizes: the checkpoint's unless flags say otherwise).

    The plan --max-memory chooses is printed as one line on stderr."""
    from unimedvl.checkpoint.memory_plan import PlanNotice
    from unimedvl.inference.api import UniMedVL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanNotice)  # said below, as one line
        model = UniMedVL.from_pretrained(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_image_pixels=args.max_image_pixels,
            **size_overrides(args),
            adapter=getattr(args, "adapter", None),
            **memory_overrides(args),
        )
    if model.memory_notice:
        print(f"memory plan: {model.memory_notice}", file=sys.stderr)
    return model


class _Progress:
    """A tqdm bar over denoising steps on stderr, created at the first step."""

    def __init__(self, enabled: bool, desc: str):
        self.enabled, self.desc, self.bar = enabled, desc, None

    def __call__(self, step: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, file=sys.stderr, unit="step")
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def emit(args, payload: dict, plain: str) -> None:
    print(json.dumps(payload) if args.json else plain, flush=True)


def thought_out(thinking: str | None, text: str) -> str:
    """A thinking-mode answer as printed: both parts labelled, and said to be empty when they are."""
    return (
        f"Thinking: {thinking or '(none: the model wrote no reasoning before its answer)'}\n"
        f"Answer: {text or '(empty: the model ended without an answer)'}"
    )


def warn_once(notice: str | None) -> None:
    if notice:
        print(f"warning: {notice}", file=sys.stderr)


def _save(image, out: str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(path)
    except (ValueError, KeyError):  # PIL: unknown extension
        raise DataError(f"--out {out}: unknown image format; use .png, .jpg, .tif or .bmp") from None
    return path


def run_image(args, call: Callable) -> int:
    progress = _Progress(not args.no_progress, "denoising")
    try:
        result = call(progress)
    finally:
        progress.close()
    image, thinking = (result.image, result.thinking) if args.think else (result, None)
    path = _save(image, args.out)
    payload = {"out": str(path), "width": image.width, "height": image.height, "seed": args.seed, "thinking": thinking}
    plain = (f"Thinking: {thinking}\n" if thinking else "") + f"wrote {path} ({image.width}x{image.height})"
    emit(args, payload, plain)
    return 0


def check_preset(args) -> None:
    """A misspelt ``--preset`` is refused before the model loads (a missing fast preset: once it is loaded)."""
    from unimedvl.guidance import preset_name

    if args.preset is not None:
        preset_name(args.preset)
