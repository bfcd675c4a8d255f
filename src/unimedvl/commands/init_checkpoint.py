"""``unimedvl init-checkpoint``: a randomly initialised checkpoint of a named size (:func:`unimedvl.checkpoint.create.init_checkpoint`)."""

from __future__ import annotations

import argparse

from unimedvl.config import MODEL_SIZES


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``init-checkpoint`` subcommand."""
    p = subparsers.add_parser("init-checkpoint", help="write a randomly initialised checkpoint of a named size")
    p.add_argument("--size", required=True, help=f"{' | '.join(MODEL_SIZES)}, or a model YAML file")
    p.add_argument("--out", required=True, help="output directory (release layout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initial weights")
    p.add_argument("--tokenizer", help="tokenizer directory (default: Qwen if it fits, else a small BPE)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype of the weights written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the checkpoint and say where."""
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(args.tokenizer) if args.tokenizer else None
    path = init_checkpoint(args.size, args.out, args.seed, tokenizer, dtype=args.dtype)
    print(f"wrote a randomly initialised {args.size} checkpoint to {path}")
    return 0
