"""``unimedvl generate``: a medical image from a text prompt (:meth:`unimedvl.inference.api.UniMedVL.generate`)."""

from __future__ import annotations

from unimedvl.commands.inference import (
    check_preset,
    image_options,
    inference_parser,
    load_model,
    run_image,
)
from unimedvl.commands.options import guidance_overrides


def register(subparsers) -> None:
    """Add the ``generate`` subcommand."""
    p = inference_parser(subparsers, "generate", "generate a medical image from a text prompt")
    p.add_argument("--prompt", required=True, help="what to draw")
    p.add_argument(
        "--height", type=int, help="output height in pixels, a multiple of 16 (default: the checkpoint's image size)"
    )
    p.add_argument(
        "--width", type=int, help="output width in pixels, a multiple of 16 (default: the checkpoint's image size)"
    )
    image_options(p, "generate")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``unimedvl generate``; the exit status."""
    check_preset(args)
    model = load_model(args)
    return run_image(
        args,
        lambda progress: model.generate(
            args.prompt,
            height=args.height,
            width=args.width,
            think=args.think,
            seed=args.seed,
            progress=progress,
            max_think_tokens=args.max_new_tokens,
            preset=args.preset,
            **guidance_overrides(args),
        ),
    )
