"""An evaluation run end to end: every checkpoint on every test set, resumable and sharded over ranks.

:func:`evaluate` is what ``unimedvl eval`` runs (:mod:`unimedvl.commands.eval` describes the run
folder); per model it resolves the settings and the memory plan (:func:`model_settings`), checks or
resumes the run folder (:mod:`unimedvl.eval.runner.run_folder`), evaluates this rank's share of the
samples still to do (:class:`~unimedvl.eval.runner.batch.BatchEvaluator`), and on rank 0 merges the
results and writes statistics.json with its provenance.
"""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from pathlib import Path

from unimedvl.eval.runner.benchmark_sets import (
    prepare_benchmarks,
    print_benchmark_result,
)
from unimedvl.eval.runner.options import SIZE_FIELDS, EvalOptions
from unimedvl.eval.runner.ranks import Ranks
from unimedvl.eval.runner.result_files import (
    RESULTS,
    ResultWriter,
    consolidate,
    finite,
    read_lines,
)
from unimedvl.eval.runner.run_folder import (
    STATS,
    check_run_dir,
    clear_run_dir,
    model_ids,
    run_identity,
    write_run_info,
)
from unimedvl.eval.runner.selection import parse_task_limits, select_samples
from unimedvl.fileio import (
    atomic_write_text,
    disk_full_reported,
    remove_stale_temporaries,
)
from unimedvl.run_lock import run_lock


def evaluate(options: EvalOptions) -> tuple[int, int]:
    """Evaluate every model on the data or on each benchmark; (how many benchmarks could not be read, how
    many samples failed over every run, as counted on rank 0)."""
    from unimedvl.eval.runner.batch import load_samples

    task_limits = parse_task_limits(options.limit_per_task)
    ranks = Ranks(options.device)
    unreadable = failed = 0
    try:
        if options.benchmarks:
            test_sets, unreadable = prepare_benchmarks(options, ranks)
        else:
            data = Path(options.data)
            test_sets = [(None, data, Path(options.data_dir) if options.data_dir else data.parent)]
        for label, data, data_dir in test_sets:
            samples = load_samples(data, data_dir, options.confine_data_dir if label is None else None)
            selected = select_samples(samples, options.limit, task_limits)
            for path, model_id in zip(options.models, model_ids(options.models)):
                plan = load_plan(options, path, ranks.device)
                settings = model_settings(options, ranks.cuda, path, plan)
                run_dir = Path(options.out) / model_id / (label or options.split or data.stem)
                with run_lock(run_dir, "eval", enabled=ranks.rank == 0):  # one run per folder (RELIABILITY.md)
                    failed += evaluate_model(
                        options, ranks, path, model_id, run_dir, data, data_dir, samples, selected, settings, plan
                    )
                if label and ranks.rank == 0:
                    print_benchmark_result(run_dir / STATS, model_id, label)
    finally:
        ranks.close()
    return unreadable, failed


def model_settings(options: EvalOptions, cuda: bool, model_path: Path | None = None, plan=None):
    """The EvalSettings of evaluating ``model_path``: its inference_config.json (release defaults without
    one) for sizes and guidance, overridden by ``options``; ``plan`` (a LoadPlan, default: the options')
    gives the components and quantisation the run records."""
    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.memory_plan import default_dtype
    from unimedvl.eval.runner.batch import EvalSettings

    checkpoint = InferenceConfig.load(model_path) if model_path is not None else InferenceConfig()
    inference = checkpoint.with_sizes(**_sizes(options))
    vae, vit = inference.vae_transform, inference.vit_transform
    plan = plan or load_plan(options)
    guidance = inference.guidance_for("eval", options.guidance)
    return EvalSettings(
        dtype=options.dtype or default_dtype("cuda" if cuda else "cpu"),
        weights=options.weights,
        vae_min_size=vae.min_image_size,
        vae_max_size=vae.max_image_size,
        vit_min_size=vit.min_image_size,
        vit_max_size=vit.max_image_size,
        vae_max_pixels=vae.max_pixels,
        vit_max_pixels=vit.max_pixels,
        max_new_tokens=options.max_new_tokens,
        seed=options.seed,
        metric_mode=options.metric_mode,
        components=plan.components,
        quantize=plan.quantize,
        strength=guidance.strength if options.strength is None else options.strength,
        guidance=guidance,
        max_image_pixels=options.max_image_pixels,
        confine_data_dir=options.confine_data_dir,
    )


def load_plan(options: EvalOptions, model_path: Path | None = None, device: str = "cpu"):
    """The LoadPlan the memory options describe; with ``max_memory``, the one chosen for ``model_path`` on
    ``device`` (said on stderr) by :func:`~unimedvl.checkpoint.loading.resolve_load`."""
    from unimedvl.checkpoint.memory_plan import LoadPlan

    memory = options.memory()
    if memory["max_memory"] is None or model_path is None:
        return LoadPlan(
            memory["components"], memory["quantize"] or "none", memory["offload"] or "none", memory["device_map"]
        )
    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.loading import resolve_load

    inference = InferenceConfig.load(model_path).with_sizes(**_sizes(options))
    _, plan, notice = resolve_load(model_path, inference, device, options.dtype, **memory)
    print(f"eval: {model_path.name}: memory plan: {notice}", file=sys.stderr)
    return plan


def _sizes(options: EvalOptions) -> dict[str, int | None]:
    return {name: options.sizes.get(name) for name in SIZE_FIELDS}


def evaluate_model(
    options: EvalOptions,
    ranks: Ranks,
    model_path: Path,
    model_id: str,
    run_dir: Path,
    data: Path,
    data_dir: Path,
    samples,
    selected,
    settings,
    plan=None,
) -> int:
    """One model: check/resume the run folder, evaluate this rank's share, merge and write statistics.

    Returns how many samples of the run failed (on rank 0; 0 on the others)."""
    identity = run_identity(model_path, data, data_dir, settings)
    replace = check_run_dir(run_dir, identity, options.overwrite)  # every rank: the same files, the same answer
    order = {s.sample_id: s.index for s in samples}
    advice = "the results written so far are intact; free space and rerun the same command to continue"
    ranks.barrier()
    if ranks.rank == 0:
        if replace:
            print(f"eval: {run_dir}: replacing the results of another run (--overwrite)", file=sys.stderr)
            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temporaries(run_dir) + remove_stale_temporaries(run_dir / "images"):
            print(f"eval: removed {stale}, left by an interrupted write", file=sys.stderr)
        with disk_full_reported("merging results", run_dir, advice):
            consolidate(run_dir, order, options.retry_failed)
    ranks.barrier()
    done = {str(line["sample_id"]) for line in read_lines(run_dir / RESULTS)[0]}
    pending = [s for s in selected if s.sample_id not in done]
    mine = ranks.share(pending)
    if ranks.rank == 0:
        print(
            f"eval: {model_id}: {len(selected)} sample(s), {len(selected) - len(pending)} already done, "
            f"{len(pending)} to run on {ranks.world} process(es)",
            file=sys.stderr,
        )
    model = _load_model(model_path, ranks, settings, plan) if mine else None
    ranks.barrier()  # every rank that has work has its model: only now does the folder belong to this run
    if ranks.rank == 0:
        write_run_info(run_dir, identity, model_id, ranks.world, ranks.device)
    ranks.barrier()
    if mine:
        with disk_full_reported("evaluating", run_dir, advice):  # folders and files the writers open
            _evaluate_share(options, ranks, model, model_id, run_dir, settings, mine)
    ranks.barrier()
    failed = 0
    if ranks.rank == 0:
        provenance = partial(_provenance, options, ranks, model_path, model_id, identity, settings, samples, selected)
        failed = _write_statistics(run_dir, order, model_id, data, settings, advice, provenance)
    ranks.barrier()
    return failed


def _write_statistics(run_dir: Path, order: dict, model_id: str, data: Path, settings, advice: str, provenance) -> int:
    """Merge the results, write statistics.json, print the summary; returns the number of failed samples.

    ``provenance(lines)`` gives statistics.json's provenance block for the merged result lines."""
    from unimedvl.eval.statistics.run_statistics import build_statistics
    from unimedvl.eval.statistics.train_majority import train_majority_for

    with disk_full_reported("writing statistics", run_dir, advice):
        lines = consolidate(run_dir, order)
        stats = build_statistics(lines, train_majority=train_majority_for(data))
        stats["provenance"] = provenance(lines)
        modes = ["reference", "native"] if settings.metric_mode == "both" else [settings.metric_mode]
        stats["run"] = {
            "model_id": model_id,
            "data": str(data),
            "metric_modes": modes,
            "vae_min_size": settings.vae_min_size,
            "num_timesteps": settings.guidance.num_timesteps,
        }
        atomic_write_text(run_dir / STATS, json.dumps(finite(stats), indent=2, allow_nan=False) + "\n")
    overall = stats["overall"]
    print(
        f"eval: {model_id}: wrote {run_dir / STATS} ({overall['total_samples']} ok, "
        f"{overall['failed_samples']} failed): {_headline(stats)}",
        file=sys.stderr,
    )
    return int(overall["failed_samples"])


def _provenance(
    options: EvalOptions,
    ranks: Ranks,
    model_path: Path,
    model_id: str,
    identity: dict,
    settings,
    samples,
    selected,
    lines,
) -> dict:
    """statistics.json's provenance block (unimedvl.eval.runner.provenance): checkpoint, data, settings, software, machine."""
    from unimedvl.eval.runner.provenance import run_provenance

    counts = {
        "n_records": len(samples),
        "n_selected": len(selected),
        "n_results": len(lines),
        "selection": {"limit": options.limit, "limit_per_task": options.limit_per_task},
    }
    return run_provenance(model_path, model_id, identity, settings, counts, ranks.device, ranks.world)


def _headline(stats: dict) -> str:
    """The overall numbers, rounded, with their 95% intervals and baselines."""
    from unimedvl.eval.report.tables import headline

    return headline(stats)


def _load_model(model_path: Path, ranks: Ranks, settings, plan=None):
    """The model of ``model_path`` on this rank's device, in the run's dtype, weights and memory plan."""
    from unimedvl.inference.api import UniMedVL

    return UniMedVL.from_pretrained(
        model_path,
        device=ranks.device,
        dtype=settings.dtype,
        prefer=settings.weights,
        config=settings.inference_config(model_path),
        max_image_pixels=settings.max_image_pixels,
        components=settings.components,
        quantize=settings.quantize,
        offload=plan.offload if plan else None,
        device_map=plan.device_map if plan else None,
    )


def _evaluate_share(options: EvalOptions, ranks: Ranks, model, model_id: str, run_dir: Path, settings, mine) -> None:
    """Evaluate this rank's samples in batches, appending each result line as it is done."""
    import torch

    from unimedvl.eval.runner.batch import BatchEvaluator

    batch_size = options.batch_size
    if batch_size == "auto":
        from unimedvl.eval.runner.auto_batch import auto_batch_size

        batch_size, line = auto_batch_size(model, settings, ranks.device)
        if ranks.rank == 0:
            print(line, file=sys.stderr)
    evaluator = BatchEvaluator(model, settings, run_dir, ranks.rank)
    target = run_dir / (RESULTS if ranks.world == 1 else f"results.rank{ranks.rank}.jsonl")
    writer = ResultWriter(target)
    bar = None
    if ranks.rank == 0 and options.progress:  # a bar on a terminal, plain lines with an ETA in logs
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
    print(
        f"eval: {model_id}: rank {ranks.rank}: {len(mine)} sample(s) in {seconds:.2f} s "
        f"({60.0 * len(mine) / max(seconds, 1e-9):.1f}/min)",
        file=sys.stderr,
    )
    del model, evaluator
    if ranks.cuda:
        torch.cuda.empty_cache()
