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
from pathlib import Path
from typing import Callable

from unimedvl.commands.options import (
    add_device_arguments,
    add_image_pixels_argument,
    add_memory_arguments,
    add_size_arguments,
    add_strength_argument,
    add_preset_argument,
    add_text_arguments,
    guidance_overrides,
    memory_overrides,
    size_overrides,
)
from unimedvl.defaults import MAX_NEW_TOKENS
from unimedvl.errors import DataError, UserError

# ---------------------------------------------------------------------------------------------
# Parsers.


def _common(parser: argparse.ArgumentParser) -> None:
    model_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


def model_options(parser: argparse.ArgumentParser, max_image_pixels: int | None = None, why: str = "") -> None:
    """--model, --device, --dtype, the image sizes, the pixel limit and the memory plan: shared by
    ask/edit/generate/chat, serve and api (the servers pass their own, lower, ``max_image_pixels`` default)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", required=True, help="checkpoint directory (or a hub id when online); a LoRA step "
                   "directory loads the base it names plus its adapter")
    g.add_argument("--adapter", default=None, metavar="DIR",
                   help="a LoRA run's step directory: its adapters applied to --model, which must be the base they "
                        "were trained on; works with every memory plan (default: none)")
    add_device_arguments(g)
    add_size_arguments(g)
    add_image_pixels_argument(g, max_image_pixels, why)
    add_memory_arguments(parser.add_argument_group("memory (unimedvl info --memory shows what each plan needs)"))


def _text_options(parser: argparse.ArgumentParser) -> None:
    add_text_arguments(parser.add_argument_group("text decoding"))


def _image_options(parser: argparse.ArgumentParser, task: str) -> None:
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


def register_ask(subparsers) -> None:
    p = subparsers.add_parser("ask", help="answer a question about medical image(s)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(p)
    p.add_argument("--image", action="append", default=[], help="input image (repeat for several)")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--think", action="store_true", help="reason step by step first")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    _text_options(p)
    p.set_defaults(func=run_ask)


def register_edit(subparsers) -> None:
    p = subparsers.add_parser("edit", help="edit a medical image following an instruction", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(p)
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--instruction", required=True, help="what to change")
    add_strength_argument(p)
    _image_options(p, "edit")
    p.set_defaults(func=run_edit)


def register_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate a medical image from a text prompt", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(p)
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument("--height", type=int, help="output height in pixels, a multiple of 16 (default: the checkpoint's image size)")
    p.add_argument("--width", type=int, help="output width in pixels, a multiple of 16 (default: the checkpoint's image size)")
    _image_options(p, "generate")
    p.set_defaults(func=run_generate)


def register_chat(subparsers) -> None:
    p = subparsers.add_parser("chat", help="multi-turn conversation about images in the terminal",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _common(p)
    p.add_argument("--think", action="store_true", help="start with thinking mode on")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    _text_options(p)
    p.set_defaults(func=run_chat)


def register(subparsers) -> None:
    """All four commands (for a parser that wants them together)."""
    for fn in (register_ask, register_edit, register_generate, register_chat):
        fn(subparsers)


# ---------------------------------------------------------------------------------------------
# Commands.


def load_model(args):
    """The UniMedVL that :func:`model_options` describe (sizes: the checkpoint's unless flags say otherwise).

    The plan --max-memory chooses is printed as one line on stderr."""
    from unimedvl.inference.api import UniMedVL
    from unimedvl.checkpoint.memory_plan import PlanNotice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlanNotice)  # said below, as one line
        model = UniMedVL.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                         max_image_pixels=args.max_image_pixels, **size_overrides(args),
                                         adapter=getattr(args, "adapter", None),
                                         **memory_overrides(args))  # fmt: skip
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


def _emit(args, payload: dict, plain: str) -> None:
    print(json.dumps(payload) if args.json else plain, flush=True)


def thought_out(thinking: str | None, text: str) -> str:
    """A thinking-mode answer as printed: both parts labelled, and said to be empty when they are."""
    return (f"Thinking: {thinking or '(none: the model wrote no reasoning before its answer)'}\n"
            f"Answer: {text or '(empty: the model ended without an answer)'}")


def _warn_once(notice: str | None) -> None:
    if notice:
        print(f"warning: {notice}", file=sys.stderr)


def run_ask(args) -> int:
    from unimedvl.inference.api import missing_image_warning

    model = load_model(args)
    _warn_once(missing_image_warning(len(args.image), args.question))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said once above, as one line
        answer = model.ask(args.image, args.question, think=args.think, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, top_p=args.top_p, seed=args.seed)  # fmt: skip
    if args.think:
        _emit(args, {"answer": answer.text, "thinking": answer.thinking}, thought_out(answer.thinking, answer.text))
    else:
        _emit(args, {"answer": answer, "thinking": None}, answer)
    return 0


def _save(image, out: str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        image.save(path)
    except (ValueError, KeyError):  # PIL: unknown extension
        raise DataError(f"--out {out}: unknown image format; use .png, .jpg, .tif or .bmp") from None
    return path


def _run_image(args, call: Callable) -> int:
    progress = _Progress(not args.no_progress, "denoising")
    try:
        result = call(progress)
    finally:
        progress.close()
    image, thinking = (result.image, result.thinking) if args.think else (result, None)
    path = _save(image, args.out)
    payload = {"out": str(path), "width": image.width, "height": image.height, "seed": args.seed,
               "thinking": thinking}  # fmt: skip
    plain = (f"Thinking: {thinking}\n" if thinking else "") + f"wrote {path} ({image.width}x{image.height})"
    _emit(args, payload, plain)
    return 0


def _check_preset(args) -> None:
    """A misspelt ``--preset`` is refused before the model loads (a missing fast preset: once it is loaded)."""
    from unimedvl.guidance import preset_name

    if args.preset is not None:
        preset_name(args.preset)


def run_edit(args) -> int:
    from unimedvl.guidance import check_strength

    if args.strength is not None:  # None: the checkpoint's editing preset
        check_strength(args.strength)  # before the model loads
    _check_preset(args)
    model = load_model(args)
    return _run_image(args, lambda progress: model.edit(
        args.image, args.instruction, think=args.think, seed=args.seed, progress=progress,
        max_think_tokens=args.max_new_tokens, strength=args.strength, preset=args.preset, **guidance_overrides(args),
    ))  # fmt: skip


def run_generate(args) -> int:
    _check_preset(args)
    model = load_model(args)
    return _run_image(args, lambda progress: model.generate(
        args.prompt, height=args.height, width=args.width, think=args.think, seed=args.seed, progress=progress,
        max_think_tokens=args.max_new_tokens, preset=args.preset, **guidance_overrides(args),
    ))  # fmt: skip


CHAT_HELP = "commands: /image PATH, /think on|off, /reset, /quit; any other line is a question"


def run_chat(args) -> int:
    model = load_model(args)
    session = model.chat(think=args.think)
    session.attach_hint = "/image PATH"
    interactive = sys.stdin.isatty()
    if interactive:
        print(CHAT_HELP, file=sys.stderr)
    turn = 0
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                command, _, rest = line.partition(" ")
                rest = rest.strip()
                if command == "/quit":
                    return 0
                if command == "/reset":
                    session.reset()
                    print("(conversation reset)", file=sys.stderr)
                elif command == "/image":
                    if not rest:
                        raise DataError("/image needs a path: /image scan.dcm")
                    session.attach(rest)
                    print(f"(attached {rest})", file=sys.stderr)
                elif command == "/think":
                    if rest not in ("on", "off"):
                        raise DataError("/think takes on or off")
                    session.think = rest == "on"
                    print(f"(thinking {rest})", file=sys.stderr)
                else:
                    print(f"unknown command {command}; {CHAT_HELP}", file=sys.stderr)
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                answer = session.ask(line, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                     top_p=args.top_p, seed=args.seed + turn)  # fmt: skip
            for notice in caught:
                _warn_once(str(notice.message))
            turn += 1
            text, thinking = (answer.text, answer.thinking) if session.think else (answer, None)
            plain = thought_out(thinking, text) if session.think else text
            _emit(args, {"question": line, "answer": text, "thinking": thinking}, plain)
        except UserError as err:  # a bad path or command ends the turn, not the session
            print(f"error: {err}", file=sys.stderr)
