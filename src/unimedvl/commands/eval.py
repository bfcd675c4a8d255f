"""``unimedvl eval``: resumable, multi-process batch evaluation of checkpoints on a JSONL test set.

::

    unimedvl eval --model CKPT [--model CKPT2 ...] --data test.jsonl [--data-dir DIR] --out OUT
                  [--vae-min-size 512|256] [--limit N] [--limit-per-task N|TASK=N ...]
                  [--metric-mode reference|native|both]
                  [--cfg-text-scale 4.0 --cfg-img-scale 2.0 --cfg-interval 0 1 --cfg-renorm-type text_channel
                   --cfg-renorm-min 0 --timestep-shift 1.0 --num-timesteps 50 --seed 0] [--max-new-tokens 800]
                  [--device cuda --dtype bf16] [--batch-size auto|N] [--overwrite] [--retry-failed]
    torchrun --standalone --nproc_per_node=8 -m unimedvl.cli eval ...      # the same, sharded
    unimedvl eval --model CKPT --benchmark vqa-rad=PATH [--benchmark slake=PATH2 ...] --out OUT
                  # standard benchmarks as published: unimedvl.commands.eval_benchmarks

What runs per record (edit two-pass protocol, text-to-image, VQA, reports) and how it is scored:
:mod:`unimedvl.eval.runner.batch`. Per model, under ``OUT/<model_id>/`` (model_id = the checkpoint
folder's name; a repeated name is prefixed with its parent folder's name; ``--split NAME`` adds a
level, ``OUT/<model_id>/NAME/``, which ``unimedvl stats OUT`` reads as model_id and split):

``run_info.json``
    model path and fingerprint (sha256 of its config files, size and mtime of its weight files),
    data path, sha256 and data_dir, and the settings; written once the model has loaded (a
    checkpoint that fails to load leaves nothing that blocks the rerun). A later run into the same
    folder must match it: then it resumes; otherwise it stops with an error (use a new --out, or
    --overwrite to replace the old results; a matching run is resumed even with --overwrite).
``results.jsonl``
    one line per sample, in the JSONL's order once the run ends. One process appends to it
    directly, each line flushed and fsync'ed; under torchrun rank r appends to
    ``results.rank{r}.jsonl`` and rank 0 merges at the end. A restart reads all of these, drops a
    truncated last line (that sample is redone), keeps the first line of each sample id and skips
    the samples already there: a killed run restarted with the same command loses and repeats
    nothing. Failed samples (``error``) count as done; ``--retry-failed`` redoes them.
``images/<sample>_{input,GT,pred}.png``, ``statistics.json``
    spec medical.md section 5 keys, plus failures, VQA per question type with a majority-answer
    baseline (from the training split when there is one, :mod:`unimedvl.eval.statistics.train_majority`), multiple choice and report metrics (:func:`unimedvl.eval.statistics.run_statistics.build_statistics`),
    over every line of results.jsonl (a --limit run followed by a full run reports the full set);
    ``estimates``: every mean with its 95% bootstrap interval, n and its baseline on the same items
    (:mod:`unimedvl.eval.statistics.estimates`); ``provenance``: checkpoint path, training step and weights hash,
    data file, sha256 and n, settings, software and machine (:mod:`unimedvl.eval.runner.provenance`).

Failures: a sample that cannot be run (unreadable or oversized image, a text longer than the
model's context, ...) is a result line with its ``error``; the summary counts them, and
``--strict`` makes the exit status 1 when there is any. A full disk stops the run with one line
("disk full while writing results in DIR; ..."), after removing the partial write; what an
interrupted writer left (``*.tmp``) is removed at the next start.

Distribution: under torchrun (RANK / WORLD_SIZE) each rank loads the model and takes every
W-th of the samples still to do, in file order (on a fresh run: rank r takes r, r+W, ...);
gloo on CPU, nccl on GPU. Several --model: every rank evaluates them one after another, in the
order given. The process group's timeout (UNIMEDVL_DIST_TIMEOUT_MIN, default one day) bounds how
long rank 0 waits at the end for the slowest rank.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from unimedvl.commands.eval_benchmarks import add_benchmark_arguments, parse_benchmarks
from unimedvl.commands.options import (
    add_device_arguments,
    add_guidance_arguments,
    add_image_pixels_argument,
    add_memory_arguments,
    add_size_arguments,
    add_strength_argument,
    guidance_overrides,
    memory_overrides,
    size_overrides,
)
from unimedvl.errors import ConfigError, UserError
from unimedvl.eval.runner.options import EvalOptions
from unimedvl.guidance import RESTORATION

DEFAULTS = EvalOptions(models=[], out="")  # the flags' defaults


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="batch evaluation (editing two-pass protocol, VQA, reports); resumable, sharded under torchrun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="checkpoint directory (repeat to evaluate several, one after another)",
    )
    p.add_argument(
        "--data",
        metavar="JSONL",
        help="test set (JSONL records, see README: Data formats); with one "
        "--benchmark NAME: that benchmark's folder (default: none, then --benchmark is needed)",
    )
    p.add_argument("--data-dir", metavar="DIR", help="folder image paths are relative to (default: the JSONL's)")
    p.add_argument("--out", required=True, metavar="DIR", help="results go to OUT/<model_id>/<split>/")
    p.add_argument(
        "--split",
        metavar="NAME",
        help="the split label of the results: `unimedvl stats OUT` reads "
        "OUT/<model_id>/<split>/ as model_id and split (default: the --data file's name without "
        "extension, e.g. test; a benchmark's own label, e.g. vqa-rad-test)",
    )
    add_benchmark_arguments(p)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N records (default: all)")
    p.add_argument(
        "--limit-per-task",
        action="append",
        metavar="N|TASK=N",
        help="evaluate at most N records of each main_task_type (file order); TASK=N sets one "
        "task's cap, e.g. --limit-per-task 10 --limit-per-task image_understanding=200 "
        "(default: no cap)",
    )
    p.add_argument(
        "--metric-mode",
        default=DEFAULTS.metric_mode,
        choices=["reference", "native", "both"],
        help="PSNR/SSIM on uint8 RGB at the prediction's size (reference, comparable with published "
        "numbers) or at the ground truth's size and intensity scale (native)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results in OUT/<model_id>/<split> left by a run with another model, data or settings",
    )
    p.add_argument("--retry-failed", action="store_true", help="redo samples that failed in an earlier run")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when any sample failed (default: 0; the summary counts the failures)",
    )
    p.add_argument(
        "--confine-data-dir",
        action="store_true",
        help="fail samples whose images lie outside --data-dir ('..', absolute paths, symlinks) "
        "(default: a warning; --benchmark sets are not checked: their images stay in the "
        "benchmark's folder)",
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULTS.batch_size,
        metavar="N|auto",
        help="samples served together (results do not depend on it); auto: what the device's free "
        "memory holds by the memory estimate, at most 8 on a CPU and 32 on a GPU, printed",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = p.add_argument_group("model")
    add_device_arguments(g, device_help="under torchrun each rank takes cuda:LOCAL_RANK")
    g.add_argument(
        "--weights",
        default=DEFAULTS.weights,
        choices=["ema", "model"],
        help="ema.safetensors (model.safetensors when absent) or the raw model.safetensors: "
        "after a short run the EMA may still be close to the initial weights",
    )
    add_size_arguments(g)
    add_image_pixels_argument(g, why="; a larger image fails its sample")
    add_memory_arguments(
        p.add_argument_group(
            "memory (unimedvl info --memory shows what each plan needs; "
            "--components understanding suits VQA and report sets)"
        )
    )
    g = p.add_argument_group("generation")
    g.add_argument(
        "--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens, help="understanding pass / answer length limit"
    )
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="run seed (each sample's seed derives from it)")
    add_strength_argument(g)
    add_guidance_arguments(p, RESTORATION, "the checkpoint's restoration preset; the release's shown")
    p.set_defaults(func=run)


def _batch_size(text: str) -> int | str:
    """--batch-size: ``auto`` or a whole number (checked >= 1 by :func:`run`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor auto") from None


def options_from_args(args: argparse.Namespace) -> EvalOptions:
    """The run the flags describe (``--benchmark`` items parsed; values checked by :func:`run`)."""
    return EvalOptions(
        models=[Path(m) for m in args.model],
        out=args.out,
        data=args.data,
        data_dir=args.data_dir,
        split=args.split,
        benchmarks=parse_benchmarks(args),
        language=args.language,
        protocol=getattr(args, "protocol", None),
        benchmark_cache=args.benchmark_cache,
        limit=args.limit,
        limit_per_task=args.limit_per_task,
        metric_mode=args.metric_mode,
        overwrite=args.overwrite,
        retry_failed=args.retry_failed,
        confine_data_dir=args.confine_data_dir,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        device=args.device,
        dtype=args.dtype,
        weights=args.weights,
        sizes=size_overrides(args),
        max_image_pixels=args.max_image_pixels,
        **memory_overrides(args),
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        strength=args.strength,
        guidance=guidance_overrides(args),
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate every --model on --data or the benchmarks (:func:`unimedvl.eval.runner.job.evaluate`); the
    exit status: 1 when a benchmark could not be read, or with --strict when a sample failed."""
    from unimedvl.eval.runner.job import evaluate

    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit {args.limit} must be >= 0")
    if args.batch_size != "auto" and args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    for path in args.model:
        if not Path(path).is_dir():
            raise UserError(f"--model {Path(path)}: checkpoint directory not found")
    options = options_from_args(args)
    if not options.benchmarks and not args.data:
        raise ConfigError("pass --data TEST.jsonl, or --benchmark NAME=PATH (repeat for several benchmarks)")
    unreadable, failed = evaluate(options)
    if failed and args.strict:
        print(
            f"eval: {failed} sample(s) failed (see the error of each in results.jsonl); exit status 1 (--strict)",
            file=sys.stderr,
        )
    return 1 if unreadable or (failed and args.strict) else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The ``eval`` arguments (``argv`` without the subcommand name)."""
    parser = argparse.ArgumentParser(prog="unimedvl")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unimedvl.commands.eval ARGS`` = ``unimedvl eval ARGS``."""
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
