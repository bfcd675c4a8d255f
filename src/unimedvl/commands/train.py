"""``unimedvl train``: the unified model's training (:mod:`unimedvl.train.entry`, the same as
``python -m unimedvl.train``); flags are TrainConfig's fields."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand: every TrainConfig field as a flag (:func:`unimedvl.train.config.add_arguments`)."""
    from unimedvl.train.config import add_arguments
    from unimedvl.train.entry import USAGE

    # No abbreviations: with two spellings per flag (--model_path, --model-path) every prefix is ambiguous.
    parser = subparsers.add_parser(
        "train",
        help="train the unified model (one process, or under torchrun with FSDP2)",
        description=USAGE.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (see :func:`unimedvl.train.entry.run_training`); the exit status, 143 after a SIGTERM."""
    from unimedvl.train.entry import run_training

    return run_training(args)
