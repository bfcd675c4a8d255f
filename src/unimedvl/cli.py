"""The ``unimedvl`` command: one entry point, one module per subcommand in :mod:`unimedvl.commands`.

Each subcommand module exposes ``register(subparsers)`` (adds its parser and sets ``func=run``) and
``run(args) -> int``. Modules are imported lazily (only the one being run, plus light ones for ``--help``) so that
``unimedvl info`` does not pay for gradio or the trainer.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from unimedvl import __version__
from unimedvl.errors import UserError

# subcommand name -> (its module, help in `unimedvl --help`). Every module is ``unimedvl.commands.<name>``
# (dashes as underscores) and exposes the same two functions: ``register(subparsers)`` adds its parser
# and sets ``func=run``; ``run(args) -> int`` runs it and returns the exit status.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("unimedvl.commands.info", "versions, device, attention backends and named model sizes"),
    "init-checkpoint": (
        "unimedvl.commands.init_checkpoint",
        "write a randomly initialised checkpoint of a named size",
    ),
    "init-from-components": (
        "unimedvl.commands.init_from_components",
        "assemble a checkpoint from Qwen2 + SigLIP + FLUX VAE",
    ),
    "ask": ("unimedvl.commands.ask", "answer a question about medical image(s)"),
    "edit": ("unimedvl.commands.edit", "edit a medical image following an instruction"),
    "generate": ("unimedvl.commands.generate", "generate a medical image from a text prompt"),
    "chat": ("unimedvl.commands.chat", "multi-turn conversation about images in the terminal"),
    "train": ("unimedvl.commands.train", "train the unified model (one process, or under torchrun with FSDP2)"),
    "merge-adapter": ("unimedvl.commands.merge_adapter", "fold a LoRA run's adapters into its base (release layout)"),
    "train-autoencoder": ("unimedvl.commands.train_autoencoder", "train a small FLUX-layout VAE on your images"),
    "validate-data": ("unimedvl.commands.validate_data", "check a dataset: records, images, sizes vs position tables"),
    "convert": ("unimedvl.commands.convert", "a standard benchmark (VQA-RAD, SLAKE, ...) as our JSONL"),
    "synth": ("unimedvl.commands.synth", "write the MedSynth benchmark (synthetic images + JSONL with ground truth)"),
    "eval": ("unimedvl.commands.eval", "batch evaluation of one or many checkpoints (resumable, sharded)"),
    "serve": ("unimedvl.commands.serve", "start the web app (ask, edit, generate) on a checkpoint"),
    "api": ("unimedvl.commands.api", "serve an OpenAI-compatible HTTP API (chat, images) on a checkpoint"),
    "demo": ("unimedvl.commands.demo", "the whole system end to end on built-in data (about 10 minutes on a CPU)"),
    "score": ("unimedvl.commands.score", "re-score saved or external predictions on a benchmark, without a model"),
    "stats": ("unimedvl.commands.stats", "aggregate statistics.json files into CSV, plots and an HTML report"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimedvl",
        description="UniMedVL: train, run and evaluate a unified medical vision-language model.",
    )
    parser.add_argument("--version", action="version", version=f"unimedvl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            # Placeholder so `--help` lists every command without importing its module.
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        importlib.import_module(module).register(sub)
    # One help layout everywhere: descriptions as written, every flag's default shown.
    from unimedvl.commands.options import DefaultsHelpFormatter
    from unimedvl.threads import HEAVY_COMMANDS, add_threads_argument

    for name, command in sub.choices.items():
        command.formatter_class = DefaultsHelpFormatter
        if name in HEAVY_COMMANDS and command.add_help:  # not the --help placeholders
            add_threads_argument(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    from unimedvl.threads import HEAVY_COMMANDS, prepare, requested_threads

    if command in HEAVY_COMMANDS:  # before any module imports torch: OpenMP reads its settings once
        prepare(requested_threads(argv))
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
