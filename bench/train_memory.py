"""Benchmark the training memory plans on CPU: peak resident memory and time per step, against the planner.

The checkpoint has the release's widths (hidden 3584, vocabulary 152064, ViT 1152 x 26, the
FLUX VAE) with ``--layers`` decoder layers (written in bf16 by ``unimedvl init-checkpoint``, as
bench/memory.py does; random weights). Each (plan, layer count) runs in a fresh child process:
``Trainer(cfg).setup()`` (the streaming load) and ``--steps`` training steps of packs of
``--tokens`` tokens of MedSynth through the real loader, compute in fp32 (a CPU without bf16
units runs bf16 matmuls ~9x slower). The child reports its peak resident set (``VmHWM``: load and
steps) and, after resetting it, the peak of the steps alone (the load's peak counts the
checkpoint's memory-mapped pages, which the steps no longer hold), the seconds of each step and what its packs held (tokens, text tokens with a loss, ViT
tokens). Plans (activation checkpointing and an EMA on in all):

- ``full``: every weight of the LLM and the ViT trains (fp32 masters, AdamW, EMA);
- ``lora``: LoRA rank 16 on every Linear of both experts and the ViT, bases frozen;
- ``qlora-int8`` / ``qlora-nf4``: the same with ``quantize_base`` int8 / nf4.

Before a child starts, the planner (:mod:`unimedvl.checkpoint.train_memory`, at this checkpoint's size, fp32
on a CPU) is asked whether the plan fits this machine's available memory; a plan that does not is
reported as not run (``--force`` runs it anyway). Printed: per plan both peaks, the steps' peak as a ratio to
full's and the time per step as a ratio to LoRA's; with two layer counts, the peaks extrapolated
linearly to the release's 28 layers beside the planner's estimate for the same packs (goal: within
10%), and the planner's GPU figure (bf16, 2048-token packs, worst case) for reference. Results
accumulate in ``--work``/results.json, so layer counts and plans can be run one command at a time.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/train_memory.py --layers 2 --plans lora
     (then --layers 4, then --report to print the table of everything measured)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from memory import status_bytes, write_checkpoint  # noqa: E402  (bench/memory.py; bench/ is on sys.path)

PLANS = {
    "full": {},
    "lora": {"lora_rank": 16},
    "qlora-int8": {"lora_rank": 16, "quantize_base": "int8"},
    "qlora-nf4": {"lora_rank": 16, "quantize_base": "nf4"},
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "out_proj", "fc1", "fc2"]
RELEASE_LAYERS = 28


def available_bytes() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def train_config(plan: str, ckpt: Path, data: dict, work: Path, tokens: int):
    from unimedvl.train.config import TrainConfig

    lora = plan != "full"
    return TrainConfig(
        dataset_config_file=data["mix"],
        dataset_info_file=data["dataset_info"],
        model_path=str(ckpt),
        checkpoint_dir=str(work / f"run_{plan}"),
        total_steps=1000,
        save_every=1000,
        warmup_steps=0,
        lr=1e-4,
        attn_backend="sdpa",
        gradient_checkpointing=True,
        progress_bar=False,
        tensorboard=False,
        expected_num_tokens=tokens,
        max_num_tokens=tokens,
        max_num_tokens_per_sample=tokens,
        ema=0.999,
        freeze_llm=lora,
        freeze_vit=lora,
        lora_target_modules=TARGETS,
        dtype="fp32",
        device="cpu",
        **PLANS[plan],
    )


def medsynth(work: Path) -> dict:
    from unimedvl.medsynth.generator import generate_medsynth

    out = work / "medsynth"
    if (out / "mix.yaml").is_file():
        return {"mix": str(out / "mix.yaml"), "dataset_info": str(out / "dataset_info.yaml")}
    return generate_medsynth(out, 64, 2, seed=0, image_size=128)


def child(args: argparse.Namespace) -> None:
    """One plan in this fresh process: setup (load) and ``--steps`` steps; one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from unimedvl.train.trainer import Trainer

    work = Path(args.work)
    cfg = train_config(args.child, Path(args.model), medsynth(work), work, args.tokens)
    start = time.perf_counter()
    trainer = Trainer(cfg).setup()
    load_s, after_load = time.perf_counter() - start, status_bytes("VmHWM")
    resident = {"after_load": resident_parts()}
    gc.collect()
    resident["after_trim"] = resident_parts(trim=True)
    # The load's peak counts the checkpoint's mmapped pages; the steps' peak is measured on its own.
    reset_peak()
    packs: list[tuple[int, int, int]] = []

    def recording(batches):
        for batch in batches:
            packs.append((batch.sequence_length, int(batch.ce_indexes.numel()), int(batch.vit_indexes.numel())))
            yield batch

    trainer.data_iter = recording(trainer.data_iter)
    seconds, step_peaks = [], []
    for _ in range(args.steps):
        reset_peak()
        t0 = time.perf_counter()
        trainer.train_step()
        trainer.step += 1
        seconds.append(time.perf_counter() - t0)
        step_peaks.append(status_bytes("VmHWM"))  # each step's own peak; the run's is their maximum
    resident["after_steps"] = resident_parts()
    gc.collect()
    resident["after_steps_trim"] = resident_parts(trim=True)
    print(
        json.dumps(
            {
                "plan": args.child,
                "layers": args.layers,
                "load_s": load_s,
                "load_peak": after_load,
                "peak": max(step_peaks),
                "step_peaks": step_peaks,
                "resident": resident,
                "step_s": seconds,
                "packs": packs,
            }
        )
    )


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)


def resident_parts(trim: bool = False) -> dict:
    """The resident set now, split into heap-and-anonymous pages and file-backed (mmapped) pages.

    ``trim``: first hand the heap's freed pages back to the OS (glibc ``malloc_trim``), to see how
    much of the resident set is memory the process already freed.
    """
    if trim:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {field: status_bytes(field) for field in ("VmRSS", "RssAnon", "RssFile")}


def planner_total(plan: str, layers: int, packs: list | None, tokens: int) -> int:
    """The planner's bytes for this bench's run (CPU, fp32, one process) at ``layers`` decoder layers."""
    from unimedvl.checkpoint.train_memory import TrainPlan, TrainSetup, estimate_train_plan

    cfg = model_config(layers)
    t, ce, vit = (max(p[i] for p in packs) for i in range(3)) if packs else (tokens, None, None)
    setup = TrainSetup(
        tokens=t,
        ce_tokens=ce,
        vit_tokens=vit,
        dtype="fp32",
        cuda=False,
        lora_rank={"und": 16, "gen": 16, "vit": 16},
        lora_targets=dict.fromkeys(("und", "gen", "vit"), tuple(TARGETS)),
    )
    return estimate_train_plan(cfg, TrainPlan(plan, checkpointing=True, ema=True), setup).total


def gpu_total(plan: str) -> int:
    from unimedvl.checkpoint.train_memory import TrainPlan, TrainSetup, estimate_train_plan

    setup = TrainSetup(tokens=2048, lora_targets=dict.fromkeys(("und", "gen", "vit"), tuple(TARGETS)))
    return estimate_train_plan(model_config(RELEASE_LAYERS), TrainPlan(plan, True, True), setup).total


def split_estimate(a: dict, b: dict, more: int) -> float:
    """The peak at ``more`` layers beyond run ``b``, from the parts that extrapolate without noise.

    The resident set after the load is the weights as held (deterministic: it grows by one layer's
    weights per layer); a step's growth over it (gradients, optimizer, EMA, activations) moves by up
    to ~1.5 GB between identical runs with where glibc places freed blocks, more than it grows per
    layer. So: the after-load line through both runs, plus ``b``'s step growth, plus what each added
    layer keeps through a step with activation checkpointing (its input: tokens x hidden x 4 bytes).
    """
    load_a, load_b = a["resident"]["after_load"]["VmRSS"], b["resident"]["after_load"]["VmRSS"]
    per_layer = (load_b - load_a) / (b["layers"] - a["layers"])
    tokens = max(p[0] for p in b["packs"])
    hidden = model_config(b["layers"]).llm.hidden_size
    return load_b + more * per_layer + (b["peak"] - load_b) + more * tokens * hidden * 4


def model_config(layers: int):
    import dataclasses

    from unimedvl.config import model_config as named

    cfg = named("bagel-7b-mot")
    return dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_hidden_layers=layers))


def run_plan(plan: str, layers: int, args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    estimate, free = planner_total(plan, layers, None, args.tokens), available_bytes()
    if estimate > 0.9 * free and not args.force:
        return {
            "plan": plan,
            "layers": layers,
            "not_run": f"the planner needs {estimate / 1e9:.1f} GB, {free / 1e9:.1f} GB available",
        }
    ckpt = write_checkpoint(work, layers)
    medsynth(work)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            plan,
            "--model",
            str(ckpt),
            "--layers",
            str(layers),
            "--work",
            str(work),
            "--tokens",
            str(args.tokens),
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        return {"plan": plan, "layers": layers, "not_run": f"failed: {tail[0][:300]} (exit {out.returncode})"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict) -> list[str]:
    lines = [
        f"{'plan':<11} {'layers':>6} {'load peak':>9} {'steps peak':>10} {'/ full':>7} {'s/step':>7} "
        f"{'/ LoRA':>7} {'planner':>8} {'largest pack (tokens, loss, ViT)':>33}"
    ]
    for _key, r in sorted(results.items(), key=lambda kv: (kv[1]["layers"], list(PLANS).index(kv[1]["plan"]))):
        if "not_run" in r:
            lines.append(f"{r['plan']:<11} {r['layers']:>6} not run: {r['not_run']}")
            continue
        full = results.get(f"full/{r['layers']}", {})
        lora = results.get(f"lora/{r['layers']}", {})
        step = statistics.median(r["step_s"])
        ratio = f"{r['peak'] / full['peak']:.2f}" if "peak" in full else "-"
        t_ratio = f"{step / statistics.median(lora['step_s']):.2f}" if "step_s" in lora else "-"
        pack = tuple(max(p[i] for p in r["packs"]) for i in range(3))
        lines.append(
            f"{r['plan']:<11} {r['layers']:>6} {r['load_peak'] / 1e9:>6.2f} GB {r['peak'] / 1e9:>7.2f} GB "
            f"{ratio:>7} {step:>7.1f} {t_ratio:>7} "
            f"{planner_total(r['plan'], r['layers'], r['packs'], 0) / 1e9:>5.2f} GB {str(pack):>33}"
        )
    lines.append("")
    lines.append(
        "28 layers: the two-point line through the peaks, and the split estimate (the resident set after the "
        "load, which grows by the weights per layer, drawn through both layer counts, plus the step's own "
        "growth measured at the larger count, plus the checkpointed layer inputs the 24 more layers keep)"
    )
    lines.append(
        f"{'plan':<11} {'two-point':>10} {'split':>10} {'planner, same packs':>20} {'vs two-point':>12} "
        f"{'vs split':>9} {'planner GPU bf16 2048':>22}"
    )
    for plan in PLANS:
        runs = sorted((r for r in results.values() if r["plan"] == plan and "peak" in r), key=lambda r: r["layers"])
        if len(runs) < 2:
            lines.append(
                f"{plan:<11} needs two layer counts measured (has {[r['layers'] for r in runs]}); "
                f"planner GPU: {gpu_total(plan) / 1e9:.2f} GB"
            )
            continue
        a, b = runs[0], runs[-1]
        more = RELEASE_LAYERS - b["layers"]
        two_point = b["peak"] + more * (b["peak"] - a["peak"]) / (b["layers"] - a["layers"])
        split = split_estimate(a, b, more)
        estimate = planner_total(plan, RELEASE_LAYERS, a["packs"] + b["packs"], 0)
        lines.append(
            f"{plan:<11} {two_point / 1e9:>7.2f} GB {split / 1e9:>7.2f} GB {estimate / 1e9:>17.2f} GB "
            f"{(estimate - two_point) / two_point:>+12.1%} {(estimate - split) / split:>+9.1%} "
            f"{gpu_total(plan) / 1e9:>19.2f} GB"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/unimedvl_bench_train_memory")
    parser.add_argument("--layers", type=int, nargs="+", default=[2])
    parser.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--tokens", type=int, default=2048, help="packed tokens per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="run plans the planner says do not fit")
    parser.add_argument("--report", action="store_true", help="only print what results.json holds")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.layers = args.layers[0]
        child(args)
        return
    from _machine import machine

    store = Path(args.work) / "results.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    if not args.report:
        for layers in args.layers:
            for plan in args.plans:
                print(f"{plan}, {layers} layers ...", flush=True)
                results[f"{plan}/{layers}"] = run_plan(plan, layers, args)
                store.parent.mkdir(parents=True, exist_ok=True)
                store.write_text(json.dumps(results, indent=1))
    runs = "" if args.report else f"; packs of {args.tokens} tokens, {args.steps} steps"
    print(f"machine: {machine()}{runs}; fp32 on CPU (each row: its own packs and steps)")
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
