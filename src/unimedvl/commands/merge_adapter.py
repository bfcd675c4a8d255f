"""``unimedvl merge-adapter``: a LoRA run's step directory folded into its base, written in the release layout."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from unimedvl.commands.options import DefaultsHelpFormatter

    p = subparsers.add_parser(
        "merge-adapter",
        formatter_class=DefaultsHelpFormatter,
        help="fold a LoRA step directory's adapters into its base (release layout)",
        description="Write the release layout with a LoRA run's adapters folded into the original base weights "
        "(read from the base checkpoint in its stored dtype, never from a quantised copy), streamed "
        "tensor by tensor. The base must be the one the adapters were trained on (its fingerprint is "
        "checked).",
    )
    p.add_argument("adapter", help="step directory of a LoRA run (holds adapter_config.json)")
    p.add_argument("--out", required=True, help="new directory for the merged checkpoint")
    p.add_argument("--base", default=None, help="base checkpoint directory (default: the one the adapter records)")
    p.add_argument(
        "--weights",
        default="ema",
        choices=["ema", "model"],
        help="which adapter weights: ema (falls back to raw when no EMA was kept) or model (raw)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unimedvl.checkpoint.adapters import merge_adapter

    out = merge_adapter(args.adapter, args.out, base=args.base, weights=args.weights)
    print(f"merged {args.adapter} into {out}")
    return 0
