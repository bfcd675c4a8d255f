"""Sharing the machine: the quick demo's training stage alone, two copies at once, two copies beside a
2-thread matmul loop; wall time per copy as a ratio to alone (issue 29).

    python bench/contention.py                 # our defaults (unimedvl/threads.py) vs torch's, 150 steps
    python bench/contention.py --steps 60 --modes ours

Each copy is a fresh process that runs the quick demo's training stage (``unimedvl train`` with the
demo's arguments) on a prepared copy of the quick demo's data and initial model. ``ours``: what the
CLI does (passive OpenMP waiting, threads from the free cores); ``torch``: torch's defaults (one
thread per core, OMP_WAIT_POLICY unset). The matmul loop is someone else's program: torch's
defaults, 2 threads, 512x512 products until the copies finish. Run it on an otherwise quiet
machine: it starts several processes at once on purpose, so other jobs both disturb it and are
disturbed (print the load beside the numbers). Goals: two copies <= 2.5x alone each; beside the
loop <= 3x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOP = (
    "import torch, time\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)\n"
)


def child(out: str, steps: int, mode: str) -> None:
    """One copy: the training stage of the quick demo prepared in ``out``; prints its wall seconds."""
    if mode == "ours":
        from unimedvl.threads import prepare

        prepare()  # as the CLI does, before torch loads
    from unimedvl.demo import Demo, DemoConfig

    cfg = DemoConfig.quick(out)
    cfg.train_steps = steps
    demo = Demo(cfg, log=lambda text: None)
    data = demo._stage("data", demo._data)
    tokenizer = demo._stage("tokenizer", lambda f: demo._tokenizer(f, data))
    ae = demo._stage("autoencoder", lambda f: demo._autoencoder(f, data))
    init = demo._stage("model_init", lambda f: demo._model_init(f, tokenizer, ae))
    import torch

    start = time.perf_counter()
    demo._stage("train", lambda f: demo._train(f, data, init))
    print(f"SECONDS {time.perf_counter() - start:.2f} THREADS {torch.get_num_threads()}", flush=True)


def _env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_copies(prepared: Path, work: Path, copies: int, steps: int, mode: str, loop: bool) -> list[tuple[float, int]]:
    """Start ``copies`` training copies at once (and the loop); (seconds, threads) of each."""
    procs = []
    for k in range(copies):
        folder = work / f"{mode}-{copies}-{int(loop)}-{k}"
        shutil.rmtree(folder, ignore_errors=True)
        # the prepared stages (data, tokenizer, autoencoder, initial model), not a previous copy's training
        shutil.copytree(
            prepared,
            folder,
            ignore=lambda where, names: {"train", "eval", "report"} if Path(where) == prepared else set(),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--child", str(folder), "--steps", str(steps), "--modes", mode],
                env=_env(mode),
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    spinner = subprocess.Popen([sys.executable, "-c", LOOP], env=_env("torch")) if loop else None
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a copy failed (exit {proc.returncode})")
            words = out.split()
            results.append((float(words[words.index("SECONDS") + 1]), int(words[words.index("THREADS") + 1])))
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per copy (the quick demo: 150)")
    parser.add_argument("--modes", default="ours,torch", help="ours, torch or both (comma-separated)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.modes)
        return
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "src"))
    from _machine import machine
    from unimedvl.demo import Demo, DemoConfig

    print(machine())
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.steps} training steps per copy")
    work = Path(tempfile.mkdtemp(prefix="contention-"))
    try:
        prepared = work / "prepared"
        cfg = DemoConfig.quick(str(prepared))
        cfg.train_steps = args.steps
        demo = Demo(cfg, log=lambda text: None)  # data, tokenizer, autoencoder, initial model: once
        data = demo._stage("data", demo._data)
        tokenizer = demo._stage("tokenizer", lambda f: demo._tokenizer(f, data))
        ae = demo._stage("autoencoder", lambda f: demo._autoencoder(f, data))
        demo._stage("model_init", lambda f: demo._model_init(f, tokenizer, ae))
        for mode in args.modes.split(","):
            ((alone, threads),) = run_copies(prepared, work, 1, args.steps, mode, loop=False)
            print(f"{mode}: alone {alone:.1f} s ({threads} threads)", flush=True)
            for label, copies, loop in (
                ("two copies at once", 2, False),
                ("two copies beside the matmul loop", 2, True),
            ):
                runs = run_copies(prepared, work, copies, args.steps, mode, loop)
                ratios = ", ".join(f"{s:.1f} s = {s / alone:.2f}x ({t} threads)" for s, t in runs)
                print(f"{mode}: {label}: {ratios}; load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
