"""``unimedvl ask``: answer a question about medical image(s) (:meth:`unimedvl.inference.api.UniMedVL.ask`)."""

from __future__ import annotations

import warnings

from unimedvl.commands.inference import (
    emit,
    inference_parser,
    load_model,
    text_options,
    thought_out,
    warn_once,
)


def register(subparsers) -> None:
    """Add the ``ask`` subcommand."""
    p = inference_parser(subparsers, "ask", "answer a question about medical image(s)")
    p.add_argument("--image", action="append", default=[], help="input image (repeat for several)")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--think", action="store_true", help="reason step by step first")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    text_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``unimedvl ask``; the exit status."""
    from unimedvl.inference.api import missing_image_warning

    model = load_model(args)
    warn_once(missing_image_warning(len(args.image), args.question))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said once above, as one line
        answer = model.ask(
            args.image,
            args.question,
            think=args.think,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
        )
    if args.think:
        emit(args, {"answer": answer.text, "thinking": answer.thinking}, thought_out(answer.thinking, answer.text))
    else:
        emit(args, {"answer": answer, "thinking": None}, answer)
    return 0
