"""``unimedvl demo``: the whole system end to end on built-in data (:mod:`unimedvl.demo.pipeline`)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="build MedSynth, train a VAE and a small model, evaluate, report")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument(
        "--minutes",
        type=float,
        help="scale the training steps by N/10 (the default fits in 10 minutes; "
        "the other stages stay fixed, so e.g. 30 takes ~20 minutes)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the data, the training and the evaluation")
    p.add_argument("--quick", action="store_true", help="about two minutes: tiny data and few steps (used by tests)")
    p.add_argument("--fresh", action="store_true", help="delete an existing --out first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo the flags describe (:func:`unimedvl.demo.pipeline.run_demo`)."""
    from unimedvl.demo.pipeline import DemoConfig, run_demo

    cfg = DemoConfig.quick(args.out, args.seed) if args.quick else DemoConfig(out=args.out, seed=args.seed)
    if args.minutes is not None:
        # Scale the training steps by N/10 (the default fits in 10 minutes). The other stages do not
        # grow, so the run takes less than N minutes.
        cfg.train_steps = max(20, int(cfg.train_steps * args.minutes / 10))
    return run_demo(cfg, fresh=args.fresh)
