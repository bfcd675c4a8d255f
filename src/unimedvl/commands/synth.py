"""``unimedvl synth``: write the MedSynth benchmark (and, with ``--real``, the real-image test set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unimedvl.errors import ConfigError
from unimedvl.medsynth import generator


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``unimedvl synth`` (write the MedSynth benchmark) to the CLI."""
    p = subparsers.add_parser(
        "synth",
        help="write the MedSynth benchmark (synthetic medical images + JSONL)",
        description=generator.__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    p.add_argument("--n-train", type=int, default=900, help="train records in total, shared across tasks")
    p.add_argument("--n-test", type=int, default=180, help="test records in total, shared across tasks")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical output")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (multiple of 16)")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help=f"subset of tasks (space or comma separated); default all: {', '.join(generator.TASKS)}",
    )
    p.add_argument(
        "--vit-image-size",
        type=int,
        default=None,
        help="image side for the ViT in the mix (default --image-size); e.g. 112 for finer patches",
    )
    p.add_argument(
        "--task-weights",
        default=None,
        metavar="TASK=W,...",
        help="share records in proportion to these weights (others weigh 1), e.g. vqa=3,report=1 "
        "(default: all tasks weigh 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes rendering the images (same files for any number; e.g. the number of cores)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a previous MedSynth in --out")
    p.add_argument(
        "--real",
        action="store_true",
        help="also build the real-image evaluation set (from installed packages) into OUT/real",
    )
    p.set_defaults(func=run)


def parse_task_weights(text: str | None) -> dict[str, float] | None:
    """``"vqa=3,report=1"`` -> ``{"vqa": 3.0, "report": 1.0}``; ConfigError naming a malformed item."""
    if not text:
        return None
    weights = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--task-weights: {item!r} is not TASK=WEIGHT (e.g. vqa=3)") from None
        if not sep:
            raise ConfigError(f"--task-weights: {item!r} is not TASK=WEIGHT (e.g. vqa=3)")
    return weights


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unimedvl synth``."""
    tasks = [t for item in args.tasks for t in item.split(",") if t] if args.tasks else None
    summary = generator.generate_medsynth(
        args.out,
        args.n_train,
        args.n_test,
        seed=args.seed,
        image_size=args.image_size,
        tasks=tasks,
        overwrite=args.overwrite,
        task_weights=parse_task_weights(args.task_weights),
        vit_image_size=args.vit_image_size,
        workers=args.workers,
    )
    for split in generator.SPLITS:
        counts = ", ".join(f"{t} {n}" for t, n in summary["counts"][split].items())
        print(f"{split}: {sum(summary['counts'][split].values())} records ({counts}) -> {summary['jsonl'][split]}")
    print(f"dataset info: {summary['dataset_info']}\nmix: {summary['mix']}")
    if args.real:
        from unimedvl.medsynth.real_set import build_real_eval_set

        real = build_real_eval_set(
            Path(args.out) / "real", image_size=args.image_size, seed=args.seed, overwrite=args.overwrite
        )
        print(f"real evaluation set: {real['count']} records from {', '.join(real['sources'])} -> {real['jsonl']}")
    return 0
