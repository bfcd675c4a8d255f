"""Benchmark the memory plans: peak resident memory of loading + one ask, and time per answer token.

The checkpoint has the release's widths (hidden 3584, 28 heads, 4 KV heads, vocabulary 152064,
ViT 1152 x 26 layers, the FLUX VAE) but ``--layers`` decoder layers (default 2), written in bf16
by ``unimedvl init-checkpoint`` under ``--work`` (random weights: answers are nonsense; memory and
time are what count). Each plan's memory is measured in a fresh child process: load with
``UniMedVL.from_pretrained(device="cpu", dtype="bf16", components=..., quantize=...)``, then one
ask about a 224 px image with ``--answer-tokens`` greedy tokens; the child reports its peak
resident set (``VmHWM``: loading and the ask), the bytes of the weights it holds, and the answer
(compared with all-bf16's). Time per answer token is measured in another child that holds the
plan and all-bf16 side by side and alternates their asks (N tokens, then 1 token: per token =
(t_N - t_1) / (N - 1), the fastest of ``--repeats``), so both see the same machine load.

Printed per plan: peak RSS / that plan's weight bytes (goal <= 1.25), peak RSS / all-bf16's
peak (goal for understanding-int8 <= 0.35), time per token / all-bf16's, and an extrapolation of
the measured bytes to the release's 28 layers beside ``unimedvl info --memory``'s estimate.
``--naive`` adds the baseline of a plain state-dict load (``safetensors.torch.load_file`` into a
model built in bf16) for comparison.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src nice -n 15 .venv/bin/python bench/memory.py [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PLANS = {
    "all-bf16": {},
    "understanding-bf16": {"components": "understanding"},
    "understanding-int8": {"components": "understanding", "quantize": "int8"},
    "all-int8": {"quantize": "int8"},
}
SIZES = dict(vae_min_size=224, vae_max_size=224, vit_min_size=224, vit_max_size=224)
QUESTION = "What imaging modality is this, and is there a lesion?"
RELEASE_LAYERS = 28


def status_bytes(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM: the peak resident set) in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _image():
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8))


def _load(plan: str, path: str):
    from unimedvl.inference.api import UniMedVL

    if plan == "naive-bf16":
        return naive_load(path)
    return UniMedVL.from_pretrained(path, device="cpu", dtype="bf16", **SIZES, **PLANS[plan])


def _ask(model, tokens: int) -> tuple[float, list[int]]:
    import torch

    from unimedvl.inference.inferencer import Request

    with torch.inference_mode():
        start = time.perf_counter()
        (result,) = model.run([Request([_image(), QUESTION], max_new_tokens=tokens, seed=0)])
    return time.perf_counter() - start, result.token_ids


def child(args: argparse.Namespace) -> None:
    """Memory of one plan in this (fresh) process: load, one ask; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from unimedvl.checkpoint.memory_estimate import loaded_weight_bytes

    base = status_bytes("VmRSS")
    start = time.perf_counter()
    model = _load(args.child, args.model)
    load_s = time.perf_counter() - start
    after_load = status_bytes("VmHWM")
    total, per_layer, layers = loaded_weight_bytes(model.model)
    _, tokens = _ask(model, args.answer_tokens)
    print(
        json.dumps(
            {
                "plan": args.child,
                "base": base,
                "load_s": load_s,
                "after_load": after_load,
                "peak": status_bytes("VmHWM"),
                "weight_bytes": total,
                "layer_bytes": per_layer,
                "layers": layers,
                "tokens": tokens,
            }
        )
    )


def timing_child(args: argparse.Namespace) -> None:
    """Time per answer token of a plan and of all-bf16 in this one process, interleaved; one JSON line.

    Per token = (t_N - t_1) / (N - 1) with the fastest of ``--repeats`` asks of each length."""
    import torch

    torch.set_num_threads(args.threads)
    models = {"all-bf16": _load("all-bf16", args.model), args.time: _load(args.time, args.model)}
    times: dict[tuple[str, int], list[float]] = {}
    answers: dict[str, list[int]] = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            for n in (args.answer_tokens, 1):
                seconds, tokens = _ask(model, n)
                times.setdefault((name, n), []).append(seconds)
                answers.setdefault(name, tokens)
    per_token = {
        name: (min(times[name, args.answer_tokens]) - min(times[name, 1])) / max(len(answers[name]) - 1, 1)
        for name in models
    }
    print(json.dumps({"plan": args.time, "s_per_token": per_token[args.time], "reference": per_token["all-bf16"]}))


def naive_load(path: str):
    """The baseline: the whole state dict read at once, then copied into a model built in bf16."""
    import torch
    from safetensors.torch import load_file

    from unimedvl.checkpoint.inference_config import InferenceConfig
    from unimedvl.checkpoint.release import VAE_PREFIX, read_model_config
    from unimedvl.inference.api import UniMedVL
    from unimedvl.inference.inferencer import Inferencer
    from unimedvl.models.embeddings import PositionEmbedding
    from unimedvl.models.unified import UnifiedModel
    from unimedvl.tokenizer import Tokenizer

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = UnifiedModel(read_model_config(path))
    finally:
        torch.set_default_dtype(default)
    state = load_file(f"{path}/ema.safetensors")
    state.update({VAE_PREFIX + k: v for k, v in load_file(f"{path}/ae.safetensors").items()})
    model.load_state_dict(state, strict=False)
    del state
    for module in model.modules():  # recomputed as load_model does, so that the answers can be compared
        if isinstance(module, PositionEmbedding):
            module.reset_parameters()
    model.to(torch.bfloat16)  # the position tables are built in fp32
    config = InferenceConfig.load(path).with_sizes(**SIZES)
    return UniMedVL(Inferencer(model, Tokenizer.from_dir(path), config=config))


def write_checkpoint(work: Path, layers: int) -> Path:
    from unimedvl.config import model_config, save_yaml, to_dict

    ckpt = work / f"release_widths_{layers}_layers"
    if (ckpt / "ema.safetensors").is_file():
        return ckpt
    cfg = model_config("bagel-7b-mot")
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_hidden_layers=layers))
    yaml_file = work / f"release_widths_{layers}_layers.yaml"
    save_yaml(to_dict(cfg), yaml_file)
    print(f"writing {ckpt} (bf16) with unimedvl init-checkpoint ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unimedvl.cli",
            "init-checkpoint",
            "--size",
            str(yaml_file),
            "--out",
            str(ckpt),
            "--dtype",
            "bf16",
        ],
        check=True,
    )
    return ckpt


def run_child(plan: str, ckpt: Path, args: argparse.Namespace, mode: str = "--child") -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            mode,
            plan,
            "--model",
            str(ckpt),
            "--threads",
            str(args.threads),
            "--answer-tokens",
            str(args.answer_tokens),
            "--repeats",
            str(args.repeats),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{plan} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extrapolation(cfg_layers: int, results: dict[str, dict]) -> list[str]:
    """Measured bytes scaled to the release's 28 layers, beside info --memory's estimate."""
    from unimedvl.checkpoint.memory_estimate import weight_bytes
    from unimedvl.checkpoint.memory_plan import LoadPlan
    from unimedvl.config import model_config

    release = model_config("bagel-7b-mot")
    lines = [f"{'plan':<22} {'measured, 28 layers':>20} {'info --memory':>14} {'difference':>11}"]
    for name, r in results.items():
        if name not in PLANS:
            continue
        per_layer = r["layer_bytes"] / r["layers"]
        measured = r["weight_bytes"] - r["layer_bytes"] + RELEASE_LAYERS * per_layer
        _, estimate, _ = weight_bytes(release, LoadPlan(**PLANS[name]), 2)
        lines.append(
            f"{name:<22} {measured / 1e9:>17.2f} GB {estimate / 1e9:>11.2f} GB "
            f"{(estimate - measured) / measured:>+10.2%}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/unimedvl_bench_memory", help="where the checkpoint is written")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers of the checkpoint")
    parser.add_argument("--answer-tokens", type=int, default=16, help="greedy answer tokens timed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each child")
    parser.add_argument("--repeats", type=int, default=3, help="timed asks of each length (the fastest counts)")
    parser.add_argument("--naive", action="store_true", help="also measure a plain state-dict load (baseline)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint (default: deleted at the end)")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="skip the timing (which holds two models at once: too large for --layers 12 in 24 GB)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--time", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.time:
        timing_child(args)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = write_checkpoint(work, args.layers)
    disk = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} before the first plan")
    print(f"checkpoint: release widths, {args.layers} decoder layers, {disk / 1e9:.2f} GB of safetensors (bf16)")
    plans = list(PLANS) + (["naive-bf16"] if args.naive else [])
    results = {}
    for plan in plans:
        results[plan] = run_child(plan, ckpt, args)
        print(
            f"  {plan}: memory measured (load {results[plan]['load_s']:.1f} s, load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    timing = {}
    for plan in [] if args.memory_only else list(PLANS)[1:]:
        timing[plan] = run_child(plan, ckpt, args, mode="--time")
        print(f"  {plan}: timed beside all-bf16 (load average {os.getloadavg()[0]:.2f})", flush=True)
    ref = results["all-bf16"]
    print(
        f"\n{'plan':<20} {'weights':>9} {'peak RSS':>9} {'peak/weights':>12} {'peak/all-bf16':>13} "
        f"{'s/token':>8} {'all-bf16':>8} {'ratio':>6} {'same tokens':>11}"
    )
    for plan, r in results.items():
        same = sum(a == b for a, b in zip(r["tokens"], ref["tokens"]))
        t = timing.get(plan)
        speed = (
            f"{t['s_per_token']:>8.3f} {t['reference']:>8.3f} {t['s_per_token'] / t['reference']:>5.2f}x"
            if t
            else f"{'':>8} {'':>8} {'':>6}"
        )
        print(
            f"{plan:<20} {r['weight_bytes'] / 1e9:>6.2f} GB {r['peak'] / 1e9:>6.2f} GB "
            f"{r['peak'] / r['weight_bytes']:>12.3f} {r['peak'] / ref['peak']:>13.3f} {speed} "
            f"{same:>4}/{len(ref['tokens'])}"
        )
    print(
        f"(process base after imports: {ref['base'] / 1e9:.2f} GB, included in the peak; s/token: the plan and "
        "all-bf16 timed in one process, interleaved, fastest of --repeats)"
    )
    print(f"\nextrapolated to {RELEASE_LAYERS} layers (weight bytes):")
    print("\n".join(extrapolation(args.layers, results)))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        shutil.rmtree(ckpt)


if __name__ == "__main__":
    main()
