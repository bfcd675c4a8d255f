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
import datetime
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from unimedvl.commands.options import (
    add_device_arguments,
    add_guidance_arguments,
    add_image_pixels_argument,
    add_memory_arguments,
    add_size_arguments,
    add_strength_argument,
    guidance_overrides,
    size_overrides,
)
from unimedvl.errors import ConfigError, UserError
from unimedvl.commands.eval_benchmarks import (
    add_benchmark_arguments,
    parse_benchmarks,
    prepare_benchmarks,
    print_benchmark_result,
)
from unimedvl.eval.runner.result_files import RESULTS, ResultWriter, consolidate, finite, read_lines
from unimedvl.fileio import atomic_write_text, disk_full_reported, remove_stale_temporaries
from unimedvl.guidance import RESTORATION
from unimedvl.run_lock import run_lock

RUN_INFO = "run_info.json"
STATS = "statistics.json"
_CONFIG_FILES = ("llm_config.json", "vit_config.json", "unimedvl_config.yaml", "config.json")


# ---------------------------------------------------------------------------------------------
# Parser.


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser("eval", help="batch evaluation (editing two-pass protocol, VQA, reports); "
                              "resumable, sharded under torchrun", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="checkpoint directory (repeat to evaluate several, one after another)")  # fmt: skip
    p.add_argument("--data", metavar="JSONL", help="test set (JSONL records, see README: Data formats); with one "
                   "--benchmark NAME: that benchmark's folder (default: none, then --benchmark is needed)")  # fmt: skip
    p.add_argument("--data-dir", metavar="DIR", help="folder image paths are relative to (default: the JSONL's)")
    p.add_argument("--out", required=True, metavar="DIR", help="results go to OUT/<model_id>/<split>/")
    p.add_argument("--split", metavar="NAME", help="the split label of the results: `unimedvl stats OUT` reads "
                   "OUT/<model_id>/<split>/ as model_id and split (default: the --data file's name without "
                   "extension, e.g. test; a benchmark's own label, e.g. vqa-rad-test)")  # fmt: skip
    add_benchmark_arguments(p)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N records (default: all)")
    p.add_argument("--limit-per-task", action="append", metavar="N|TASK=N",
                   help="evaluate at most N records of each main_task_type (file order); TASK=N sets one "
                        "task's cap, e.g. --limit-per-task 10 --limit-per-task image_understanding=200 "
                        "(default: no cap)")  # fmt: skip
    p.add_argument("--metric-mode", default="reference", choices=["reference", "native", "both"],
                   help="PSNR/SSIM on uint8 RGB at the prediction's size (reference, comparable with published "
                        "numbers) or at the ground truth's size and intensity scale (native)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace results in OUT/<model_id>/<split> left by a run with another model, data or settings")
    p.add_argument("--retry-failed", action="store_true", help="redo samples that failed in an earlier run")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any sample failed (default: 0; the summary counts the failures)")
    p.add_argument("--confine-data-dir", action="store_true",
                   help="fail samples whose images lie outside --data-dir ('..', absolute paths, symlinks) "
                        "(default: a warning; --benchmark sets are not checked: their images stay in the "
                        "benchmark's folder)")  # fmt: skip
    p.add_argument("--batch-size", type=_batch_size, default="auto", metavar="N|auto",
                   help="samples served together (results do not depend on it); auto: what the device's free "
                        "memory holds by the memory estimate, at most 8 on a CPU and 32 on a GPU, printed")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = p.add_argument_group("model")
    add_device_arguments(g, device_help="under torchrun each rank takes cuda:LOCAL_RANK")
    g.add_argument("--weights", default="ema", choices=["ema", "model"],
                   help="ema.safetensors (model.safetensors when absent) or the raw model.safetensors: "
                        "after a short run the EMA may still be close to the initial weights")  # fmt: skip
    add_size_arguments(g)
    add_image_pixels_argument(g, why="; a larger image fails its sample")
    add_memory_arguments(p.add_argument_group("memory (unimedvl info --memory shows what each plan needs; "
                                              "--components understanding suits VQA and report sets)"))
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", type=int, default=800, help="understanding pass / answer length limit")
    g.add_argument("--seed", type=int, default=0, help="run seed (each sample's seed derives from it)")
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


def settings_from_args(args: argparse.Namespace, cuda: bool, model_path: Path | None = None, plan=None):
    """The settings of evaluating ``model_path``: its inference_config.json (release defaults without one)
    for sizes and guidance, overridden by the flags given; ``plan`` (a LoadPlan, default: the memory
    flags') gives the components and quantisation the run records."""
    from unimedvl.eval.runner.batch import EvalSettings
    from unimedvl.checkpoint.inference_config import InferenceConfig

    checkpoint = InferenceConfig.load(model_path) if model_path is not None else InferenceConfig()
    inference = checkpoint.with_sizes(**size_overrides(args))
    vae, vit = inference.vae_transform, inference.vit_transform
    plan = plan or load_plan_from_args(args)
    guidance = inference.guidance_for("eval", guidance_overrides(args))
    return EvalSettings(
        dtype=args.dtype or ("bf16" if cuda else "fp32"), weights=args.weights, vae_min_size=vae.min_image_size,
        vae_max_size=vae.max_image_size, vit_min_size=vit.min_image_size, vit_max_size=vit.max_image_size,
        vae_max_pixels=vae.max_pixels, vit_max_pixels=vit.max_pixels, max_new_tokens=args.max_new_tokens,
        seed=args.seed, metric_mode=args.metric_mode, components=plan.components, quantize=plan.quantize,
        strength=guidance.strength if args.strength is None else args.strength, guidance=guidance,
        max_image_pixels=args.max_image_pixels, confine_data_dir=args.confine_data_dir,
    )  # fmt: skip


def load_plan_from_args(args: argparse.Namespace, model_path: Path | None = None, device: str = "cpu"):
    """The LoadPlan the memory flags describe; with --max-memory, the one chosen for ``model_path`` on
    ``device`` (said on stderr)."""
    from unimedvl.checkpoint.memory_plan import LoadPlan

    components = getattr(args, "components", None) or "all"
    if getattr(args, "max_memory", None) is None or model_path is None:
        return LoadPlan(components, getattr(args, "quantize", None) or "none", getattr(args, "offload", None) or "none",
                        getattr(args, "device_map", None))  # fmt: skip
    from unimedvl.checkpoint.release import read_model_config
    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.memory_estimate import resolve_plan

    inference = InferenceConfig.load(model_path).with_sizes(**size_overrides(args))
    dtype = args.dtype or ("bf16" if str(device).startswith("cuda") else "fp32")
    plan, notice = resolve_plan(read_model_config(model_path), inference, device, dtype, components=components,
                                quantize=args.quantize, offload=args.offload, device_map=args.device_map,
                                max_memory=args.max_memory)  # fmt: skip
    print(f"eval: {model_path.name}: memory plan: {notice}", file=sys.stderr)
    return plan


# ---------------------------------------------------------------------------------------------
# Identity of a run.


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 of the config files, (size, mtime) of the weight files: changes when the weights do."""
    configs = {name: _sha256(path / name) for name in _CONFIG_FILES if (path / name).is_file()}
    weights = {
        f.name: {"size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}
        for f in sorted(path.iterdir())
        if f.is_file() and (f.name.endswith(".safetensors") or f.name.endswith(".safetensors.index.json"))
    }
    return {"configs_sha256": configs, "weights": weights}


def model_ids(paths: Sequence[Path]) -> list[str]:
    """The folder name of each checkpoint; repeated names get their parent's name, then a number."""
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise ConfigError(f"--model {paths[i]} is given twice; list each checkpoint once")
    names = [p.name for p in resolved]
    ids = [f"{p.parent.name}-{p.name}" if names.count(p.name) > 1 else p.name for p in resolved]
    out: list[str] = []
    for name in ids:
        candidate, k = name, 2
        while candidate in out:
            candidate, k = f"{name}_{k}", k + 1
        out.append(candidate)
    return out


def run_identity(model_path: Path, data: Path, data_dir: Path, settings) -> dict[str, Any]:
    """What a resume must match: the model, the data and the settings."""
    return {"model": {"path": str(model_path.resolve()), "fingerprint": checkpoint_fingerprint(model_path)},
            "data": {"path": str(data.resolve()), "sha256": _sha256(data), "data_dir": str(data_dir.resolve())},
            "settings": settings.to_json()}  # fmt: skip


def _differences(old: dict, new: dict) -> list[str]:
    """Keys that differ (the paths themselves may move: the fingerprints decide)."""
    from unimedvl.eval.runner.batch import EvalSettings

    diffs = []
    if old.get("model", {}).get("fingerprint") != new["model"]["fingerprint"]:
        diffs.append(f"model ({old.get('model', {}).get('path')} -> {new['model']['path']}: weights or config differ)")
    for key in ("sha256", "data_dir"):
        if old.get("data", {}).get(key) != new["data"][key]:
            diffs.append(f"data.{key}")
    # Settings added later (e.g. weights) are compared at their default, which older runs used.
    old_settings = {**EvalSettings().to_json(), **old.get("settings", {})}
    diffs += [f"{k} ({old_settings.get(k)!r} -> {v!r})" for k, v in new["settings"].items() if old_settings.get(k) != v]
    return diffs


def check_run_dir(run_dir: Path, identity: dict, overwrite: bool) -> bool:
    """True when ``run_dir`` holds another run that --overwrite allows us to replace; UserError when
    it holds one without --overwrite; False when it is new or holds this run (resume)."""
    info = run_dir / RUN_INFO
    ours = [run_dir / RESULTS, run_dir / STATS, *run_dir.glob("results.rank*.jsonl")]
    if not info.is_file():
        if not any(p.is_file() and p.stat().st_size for p in ours):  # empty files hold no results
            return False
        why = f"{run_dir} holds results but no {RUN_INFO}, so they cannot be matched to this run"
    else:
        try:
            old = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            old, why = None, f"{info} is unreadable ({err})"
        if old is not None:
            diffs = _differences(old, identity)
            if not diffs:
                return False
            why = f"{run_dir} holds results of another run; differs in: {'; '.join(diffs)}"
    if overwrite:
        return True
    raise UserError(f"{why}. Use a new --out, or pass --overwrite to replace those results")


def _clear(run_dir: Path) -> None:
    for path in [run_dir / RESULTS, run_dir / STATS, run_dir / RUN_INFO, *run_dir.glob("results.rank*.jsonl")]:
        path.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "images", ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Distribution.


class _Dist:
    """Rank, world and device of this evaluation process; the process group under torchrun."""

    def __init__(self, device: str | None):
        import torch.distributed as dist

        from unimedvl.distributed import start_distributed

        self.started = not dist.is_initialized()
        # Rank 0 merges at the end and may wait long for the slowest rank: a day by default.
        info = start_distributed(device, timeout_minutes=24 * 60)
        self.started = self.started and dist.is_initialized()
        self.rank, self.world = info.rank, info.world_size
        self.cuda = info.device.type == "cuda"
        self.device = str(info.device)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.started:
            from unimedvl.distributed import stop_distributed

            stop_distributed()


# ---------------------------------------------------------------------------------------------
# The command.


def parse_task_limits(items: list[str] | None) -> dict[str | None, int]:
    """``["10", "image_understanding=200"]`` -> ``{None: 10, "image_understanding": 200}`` (None: other tasks)."""
    limits: dict[str | None, int] = {}
    for item in items or []:
        task, sep, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 0 or (sep and not task):
            raise ConfigError(f"--limit-per-task {item!r}: expected N or TASK=N with N >= 0")
        limits[task if sep else None] = n
    return limits


def select_samples(samples: list, limit: int | None, per_task: dict[str | None, int]) -> list:
    """The samples to evaluate: at most ``per_task[task]`` (or ``per_task[None]``) of each task in file
    order, then the first ``limit`` of those."""
    counts: dict[str, int] = {}
    selected = []
    for sample in samples:
        cap = per_task.get(sample.task_type, per_task.get(None))
        seen = counts.get(sample.task_type, 0)
        if cap is None or seen < cap:
            selected.append(sample)
        counts[sample.task_type] = seen + 1
    return selected if limit is None else selected[:limit]


def run(args: argparse.Namespace) -> int:
    """Evaluate every --model on --data (see the module docstring); returns the exit status."""
    from unimedvl.eval.runner.batch import load_samples

    if args.limit is not None and args.limit < 0:
        raise ConfigError(f"--limit {args.limit} must be >= 0")
    if args.batch_size != "auto" and args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    paths = [Path(m) for m in args.model]
    for path in paths:
        if not path.is_dir():
            raise UserError(f"--model {path}: checkpoint directory not found")
    benchmarks = parse_benchmarks(args)
    if not benchmarks and not args.data:
        raise ConfigError("pass --data TEST.jsonl, or --benchmark NAME=PATH (repeat for several benchmarks)")
    task_limits = parse_task_limits(args.limit_per_task)
    dist = _Dist(args.device)
    unreadable = failed = 0
    try:
        if benchmarks:
            test_sets, unreadable = prepare_benchmarks(args, benchmarks, dist)
        else:
            data = Path(args.data)
            test_sets = [(None, data, Path(args.data_dir) if args.data_dir else data.parent)]
        for label, data, data_dir in test_sets:
            samples = load_samples(data, data_dir, args.confine_data_dir if label is None else None)
            selected = select_samples(samples, args.limit, task_limits)
            for path, model_id in zip(paths, model_ids(paths)):
                plan = load_plan_from_args(args, path, dist.device)
                settings = settings_from_args(args, dist.cuda, path, plan)
                run_dir = Path(args.out) / model_id / (label or args.split or data.stem)
                with run_lock(run_dir, "eval", enabled=dist.rank == 0):  # one run per folder (RELIABILITY.md)
                    failed += evaluate_model(args, dist, path, model_id, run_dir, data, data_dir, samples, selected,
                                             settings, plan)  # fmt: skip
                if label and dist.rank == 0:
                    print_benchmark_result(run_dir / STATS, model_id, label)
    finally:
        dist.close()
    if failed and args.strict:
        print(f"eval: {failed} sample(s) failed (see the error of each in results.jsonl); exit status 1 "
              "(--strict)", file=sys.stderr)  # fmt: skip
    return 1 if unreadable or (failed and args.strict) else 0


def evaluate_model(args, dist: _Dist, model_path: Path, model_id: str, run_dir: Path, data: Path, data_dir: Path,
                   samples, selected, settings, plan=None) -> int:  # fmt: skip
    """One model: check/resume the run folder, evaluate this rank's share, merge and write statistics.

    Returns how many samples of the run failed (on rank 0; 0 on the others)."""
    identity = run_identity(model_path, data, data_dir, settings)
    replace = check_run_dir(run_dir, identity, args.overwrite)  # every rank: the same files, the same answer
    order = {s.sample_id: s.index for s in samples}
    advice = "the results written so far are intact; free space and rerun the same command to continue"
    dist.barrier()
    if dist.rank == 0:
        if replace:
            print(f"eval: {run_dir}: replacing the results of another run (--overwrite)", file=sys.stderr)
            _clear(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(run_dir) + remove_stale_temporaries(run_dir / "images"):
            print(f"eval: removed {stale}, left by an interrupted write", file=sys.stderr)
        with disk_full_reported("merging results", run_dir, advice):
            consolidate(run_dir, order, args.retry_failed)
    dist.barrier()
    done = {str(line["sample_id"]) for line in read_lines(run_dir / RESULTS)[0]}
    pending = [s for s in selected if s.sample_id not in done]
    mine = pending[dist.rank :: dist.world]
    if dist.rank == 0:
        print(f"eval: {model_id}: {len(selected)} sample(s), {len(selected) - len(pending)} already done, "
              f"{len(pending)} to run on {dist.world} process(es)", file=sys.stderr)  # fmt: skip
    model = _load_model(model_path, dist, settings, plan) if mine else None
    dist.barrier()  # every rank that has work has its model: only now does the folder belong to this run
    if dist.rank == 0:
        _write_run_info(run_dir, identity, model_id, dist)
    dist.barrier()
    if mine:
        with disk_full_reported("evaluating", run_dir, advice):  # folders and files the writers open
            _evaluate_share(args, dist, model, model_id, run_dir, settings, mine)
    dist.barrier()
    failed = 0
    if dist.rank == 0:
        provenance = partial(_provenance, args, dist, model_path, model_id, identity, settings, samples, selected)
        failed = _write_statistics(run_dir, order, model_id, data, settings, advice, provenance)
    dist.barrier()
    return failed


def _write_run_info(run_dir: Path, identity: dict, model_id: str, dist: _Dist) -> None:
    """run_info.json, unless the folder has it (a resumed run keeps its creation record)."""
    if (run_dir / RUN_INFO).is_file():
        return
    info = {**identity, "model_id": model_id, "world_size": dist.world, "device": dist.device,
            "created": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
    with disk_full_reported("writing run_info.json", run_dir, "free space and rerun the same command"):
        atomic_write_text(run_dir / RUN_INFO, json.dumps(info, indent=2) + "\n")


def _write_statistics(run_dir: Path, order: dict, model_id: str, data: Path, settings, advice: str,
                      provenance) -> int:  # fmt: skip
    """Merge the results, write statistics.json, print the summary; returns the number of failed samples.

    ``provenance(lines)`` gives statistics.json's provenance block for the merged result lines."""
    from unimedvl.eval.statistics.run_statistics import build_statistics
    from unimedvl.eval.statistics.train_majority import train_majority_for

    with disk_full_reported("writing statistics", run_dir, advice):
        lines = consolidate(run_dir, order)
        stats = build_statistics(lines, train_majority=train_majority_for(data))
        stats["provenance"] = provenance(lines)
        modes = ["reference", "native"] if settings.metric_mode == "both" else [settings.metric_mode]
        stats["run"] = {"model_id": model_id, "data": str(data), "metric_modes": modes,
                        "vae_min_size": settings.vae_min_size, "num_timesteps": settings.guidance.num_timesteps}  # fmt: skip
        atomic_write_text(run_dir / STATS, json.dumps(finite(stats), indent=2, allow_nan=False) + "\n")
    overall = stats["overall"]
    print(f"eval: {model_id}: wrote {run_dir / STATS} ({overall['total_samples']} ok, "
          f"{overall['failed_samples']} failed): {_headline(stats)}", file=sys.stderr)  # fmt: skip
    return int(overall["failed_samples"])


def _provenance(args, dist: _Dist, model_path: Path, model_id: str, identity: dict, settings, samples, selected,
                lines) -> dict:  # fmt: skip
    """statistics.json's provenance block (unimedvl.eval.runner.provenance): checkpoint, data, settings, software, machine."""
    from unimedvl.eval.runner.provenance import run_provenance

    counts = {"n_records": len(samples), "n_selected": len(selected), "n_results": len(lines),
              "selection": {"limit": args.limit, "limit_per_task": args.limit_per_task}}  # fmt: skip
    return run_provenance(model_path, model_id, identity, settings, counts, dist.device, dist.world)


def _headline(stats: dict) -> str:
    """The overall numbers, rounded, with their 95% intervals and baselines."""
    from unimedvl.eval.report.tables import headline

    return headline(stats)


def _load_model(model_path: Path, dist: _Dist, settings, plan=None):
    from unimedvl.inference.api import UniMedVL

    return UniMedVL.from_pretrained(model_path, device=dist.device, dtype=settings.dtype, prefer=settings.weights,
                                    config=settings.inference_config(model_path),
                                    max_image_pixels=settings.max_image_pixels, components=settings.components,
                                    quantize=settings.quantize, offload=plan.offload if plan else None,
                                    device_map=plan.device_map if plan else None)  # fmt: skip


def _evaluate_share(args, dist: _Dist, model, model_id: str, run_dir: Path, settings, mine) -> None:
    import torch

    from unimedvl.eval.runner.batch import BatchEvaluator

    batch_size = args.batch_size
    if batch_size == "auto":
        from unimedvl.eval.runner.auto_batch import auto_batch_size

        batch_size, line = auto_batch_size(model, settings, dist.device)
        if dist.rank == 0:
            print(line, file=sys.stderr)
    evaluator = BatchEvaluator(model, settings, run_dir, dist.rank)
    target = run_dir / (RESULTS if dist.world == 1 else f"results.rank{dist.rank}.jsonl")
    writer = ResultWriter(target)
    bar = None
    if dist.rank == 0 and not args.no_progress:  # a bar on a terminal, plain lines with an ETA in logs
        from unimedvl.progress import Progress

        bar = Progress(len(mine), f"eval {model_id}", unit="sample")
    start = time.perf_counter()
    try:
        for k in range(0, len(mine), batch_size):
            for line in evaluator.evaluate(mine[k : k + batch_size]):
                writer.write(line)
            if bar is not None:
                bar.update(min(batch_size, len(mine) - k))
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    print(f"eval: {model_id}: rank {dist.rank}: {len(mine)} sample(s) in {seconds:.2f} s "
          f"({60.0 * len(mine) / max(seconds, 1e-9):.1f}/min)", file=sys.stderr)  # fmt: skip
    del model, evaluator
    if dist.cuda:
        torch.cuda.empty_cache()


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
