"""``unimedvl validate-data``: check a dataset (a JSONL file, a training mix, or a standard benchmark as
its publisher ships it) before training; the checks are :mod:`unimedvl.data.validate`'s."""

from __future__ import annotations

import argparse
import os
import sys

from unimedvl.commands.options import (
    add_image_pixels_argument,
    add_size_arguments,
    size_overrides,
)
from unimedvl.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate-data`` subcommand."""
    parser = subparsers.add_parser(
        "validate-data",
        help="check a JSONL dataset: records, image files, sizes against the model's position tables",
        description="Read every record and image header of a JSONL file; print counts, size ranges and "
        "problems (path:line: message). Exit status 1 when anything is wrong.",
    )
    parser.add_argument("source", help="a .jsonl file, or a YAML training mix (with --dataset-info)")
    parser.add_argument("--data-dir", default=None, help="folder image paths are relative to (default: the file's)")
    parser.add_argument(
        "--dataset-info",
        default=None,
        help="dataset info YAML/JSON for a mix (default: the mix's dataset_info key, else "
        "dataset_info.yaml beside it); the mix's own transforms replace the size flags",
    )
    parser.add_argument(
        "--model",
        default="bagel-7b-mot",
        help="a checkpoint directory (its position tables, strides and inference_config.json sizes "
        "apply) or a model size name / YAML (the release's sizes apply)",
    )
    from unimedvl.data.config import DataConfig

    add_size_arguments(parser)
    add_image_pixels_argument(parser)
    parser.add_argument("--no-size-check", action="store_true", help="skip the transform / position-table check")
    parser.add_argument(
        "--max-num-tokens-per-sample",
        type=int,
        default=DataConfig.max_num_tokens_per_sample,
        metavar="N",
        help="report records longer than this many tokens (training's "
        "max_num_tokens_per_sample; the model's context length caps it) (default: "
        f"{DataConfig.max_num_tokens_per_sample})",
    )
    parser.add_argument(
        "--no-token-check",
        action="store_true",
        help="do not tokenise the records (skips the token-count check and loading the tokenizer)",
    )
    parser.add_argument(
        "--confine-data-dir",
        action="store_true",
        help="report images outside the data folder ('..', absolute paths, symlinks) as problems (default: warnings)",
    )
    parser.add_argument("--decode", action="store_true", help="decode every image fully (slower; finds truncation)")
    parser.add_argument(
        "--max-problems", type=int, default=50, help="problems and warnings to print per file (default 50; 0 = all)"
    )
    bench = parser.add_argument_group("standard benchmarks (SOURCE is the folder its publisher ships)")
    bench.add_argument(
        "--benchmark",
        metavar="NAME",
        help="read SOURCE as this benchmark (vqa-rad, slake, path-vqa, "
        "omnimedvqa, vlmevalkit, gmai-mmbench, llava-med): counts per split and type, problems (default: SOURCE is our JSONL or a mix)",
    )
    bench.add_argument("--split", help="with --benchmark: only this split (default: all)")
    bench.add_argument(
        "--language",
        default="en",
        choices=("en", "zh", "all"),
        help="with --benchmark slake: question language (default en)",
    )
    parser.set_defaults(func=run)


def _is_mix(source: str) -> bool:
    return source.lower().endswith((".yaml", ".yml"))


def _sources(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """The (jsonl_path, data_dir) pairs named on the command line (the JSONL form)."""
    if args.dataset_info is not None:
        raise UserError("--dataset-info applies to a YAML mix, not to a JSONL file; use --data-dir")
    return [(args.source, args.data_dir)]


def _model(spec: str):
    """(ModelConfig, InferenceConfig) of ``--model``: a checkpoint directory (with the sizes it is fed at) or
    a size name / YAML (the release's sizes at that model's strides, so oversized settings are caught)."""
    from dataclasses import replace

    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.config import load_model_config

    if os.path.isdir(spec):
        from unimedvl.checkpoint.release import read_model_config

        return read_model_config(spec), InferenceConfig.load(spec)
    model = load_model_config(spec)
    base = InferenceConfig()
    return model, replace(
        base,
        vae_transform=replace(base.vae_transform, image_stride=model.vae_image_stride),
        vit_transform=replace(base.vit_transform, image_stride=model.vit.patch_size),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``validate-data``: print the report; 0 when clean, 1 when anything is wrong."""
    from unimedvl.data.validate import validate_mix, validate_sources

    if getattr(args, "benchmark", None):
        return run_benchmark(args)
    model, inference = _model(args.model)
    options = dict(
        max_image_pixels=args.max_image_pixels, tokens=_token_limit(args, model), confine_data_dir=args.confine_data_dir
    )
    if _is_mix(args.source):
        if args.data_dir is not None:
            raise UserError("--data-dir applies to a JSONL file; a mix takes data_dir from the dataset info")
        report = validate_mix(
            args.source, args.dataset_info, model, decode=args.decode, size_check=not args.no_size_check, **options
        )
        print(report.format(max_problems=args.max_problems or None))
        return 0 if report.ok else 1
    sources = _sources(args)
    vae = vit = None
    latent_side = vit_side = None
    if not args.no_size_check:
        inference = inference.with_sizes(**size_overrides(args))
        vae, vit = inference.vae_transform, inference.vit_transform
        latent_side, vit_side = model.max_latent_size, model.vit_max_num_patch_per_side
    report = validate_sources(sources, vae, vit, latent_side, vit_side, decode=args.decode, **options)
    print(report.format(max_problems=args.max_problems or None))
    return 0 if report.ok else 1


def _token_limit(args: argparse.Namespace, model):
    """The token budget of --model (:func:`unimedvl.data.token_budget.token_limit`), None with --no-token-check."""
    if args.no_token_check:
        return None
    if args.max_num_tokens_per_sample < 1:
        raise UserError(f"--max-num-tokens-per-sample {args.max_num_tokens_per_sample} must be >= 1")
    from unimedvl.data.token_budget import token_limit

    return token_limit(args.model, model, args.max_num_tokens_per_sample)


def run_benchmark(args: argparse.Namespace) -> int:
    """``validate-data --benchmark``: counts and problems; 0 when clean, 1 otherwise."""
    from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark
    from unimedvl.benchmarks.reader import ReadOptions
    from unimedvl.commands.convert import print_checksums
    from unimedvl.data.problem_lines import print_problems

    options = ReadOptions(language=args.language, image_dir=getattr(args, "data_dir", None))
    source = open_benchmark(args.benchmark, args.source, args.split or "all", options)
    conv = convert_benchmark(source, check_headers=True)
    print(conv.summary())
    print_checksums(conv)
    if source.split is None:
        present = source.reader.splits(source.path, source.layout)
        print(f"splits read: {', '.join(present) or 'none'} (every split present; --split NAME for one)")
    if conv.problems:
        print(f"problems: {len(conv.problems)}")
        print_problems(conv.problems, args.max_problems or None, file=sys.stdout)
    else:
        print("no problems found")
    return 1 if conv.problems else 0
