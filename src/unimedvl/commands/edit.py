"""``unimedvl edit``: edit a medical image following an instruction (:meth:`unimedvl.inference.api.UniMedVL.edit`)."""

from __future__ import annotations

from unimedvl.commands.inference import (
    check_preset,
    image_options,
    inference_parser,
    load_model,
    run_image,
)
from unimedvl.commands.options import add_strength_argument, guidance_overrides


def register(subparsers) -> None:
    """Add the ``edit`` subcommand."""
    p = inference_parser(subparsers, "edit", "edit a medical image following an instruction")
    p.add_argument("--image", required=True, help="input image")
    p.add_argument("--instruction", required=True, help="what to change")
    add_strength_argument(p)
    image_options(p, "edit")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``unimedvl edit``; the exit status."""
    from unimedvl.guidance import check_strength

    if args.strength is not None:  # None: the checkpoint's editing preset
        check_strength(args.strength)  # before the model loads
    check_preset(args)
    model = load_model(args)
    return run_image(
        args,
        lambda progress: model.edit(
            args.image,
            args.instruction,
            think=args.think,
            seed=args.seed,
            progress=progress,
            max_think_tokens=args.max_new_tokens,
            strength=args.strength,
            preset=args.preset,
            **guidance_overrides(args),
        ),
    )
