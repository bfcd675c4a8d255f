"""Benchmark the HTTP API's batching: concurrent VQA clients, ``--max-batch 8`` vs ``--max-batch 1``.

The server runs in this process (uvicorn in a thread on 127.0.0.1) on a demo-size checkpoint
(``unimedvl init-checkpoint --size demo``: random weights, so the answers are nonsense and only
the timing counts). ``--clients`` threads, each with its own official ``openai`` client, send
``--requests`` questions about different 64 px images one after the other (a closed loop: a
client sends its next question when it has the answer). Both configurations are measured in
the same run, alternating for ``--rounds`` so that both see the same machine load; the answers
of the two must be identical (greedy decoding: batching must not change them).

Prints requests/s of each and their ratio (goal >= 1.5x), p50/p95 latency, and the machine line.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/api.py [--checkpoint DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)

QUESTIONS = ("What imaging modality is this?", "Is there a lesion?", "Where is the lesion?", "Describe the findings.")
# The sizes `unimedvl demo` trains at (README): 64 px VAE rule, 56..70 px ViT.
DEMO_SIZES = dict(min_image_size=64, max_image_size=64, vit_min_image_size=56, vit_max_image_size=70)


def data_url(seed: int) -> str:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def one_client(url: str, client_index: int, requests: int, max_tokens: int) -> list[tuple[str, float]]:
    """(answer, seconds) of each of this client's questions, asked one after the other."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    out = []
    for k in range(requests):
        seed = client_index * 100 + k
        message = {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(seed)}},
                {"type": "text", "text": QUESTIONS[k % len(QUESTIONS)]},
            ],
        }
        start = time.perf_counter()
        reply = client.chat.completions.create(model="demo", messages=[message], max_tokens=max_tokens)
        out.append((reply.choices[0].message.content, time.perf_counter() - start))
    return out


def measure(inferencer, max_batch: int, args) -> dict:
    """One configuration: a fresh server, a warm-up request, then every client at once."""
    from unimedvl.api.server import BackgroundServer, create_app
    from unimedvl.api.settings import ServerSettings

    settings = ServerSettings(
        port=0, api_key="bench", max_batch=max_batch, batch_window_ms=args.window_ms, queue_size=max(64, args.clients)
    )
    with BackgroundServer(create_app(inferencer, settings, model_id="demo")) as server:
        one_client(server.url, 999, 1, args.max_tokens)  # warm-up: first-call costs out of the timing
        out = run_clients(args.clients, lambda c: one_client(server.url, c, args.requests, args.max_tokens))
    return {**out, "answers": out["outputs"]}


def load_model(checkpoint: str | None):
    """The checkpoint at the demo's sizes, CPU fp32 (None: a random demo-size one, made in a temporary folder)."""
    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.inference.api import UniMedVL

    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint
        if path is None:
            path = Path(tmp) / "demo"
            init_checkpoint("demo", path, seed=0)
        return UniMedVL.from_pretrained(path, device="cpu", dtype="fp32", **DEMO_SIZES)


def run_clients(clients: int, one: Callable[[int], list[tuple[Any, float]]]) -> dict:
    """Every client at once (``one(index)`` -> [(output, seconds)]): outputs, wall time, requests/s, p50/p95."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(one, range(clients)))
    wall = time.perf_counter() - start
    latencies = [s for results in per_client for _, s in results]
    return {
        "outputs": [a for results in per_client for a, _ in results],
        "wall": wall,
        "rps": len(latencies) / wall,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "mean": sum(latencies) / len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random demo-size one, made here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="questions per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--window-ms", type=float, default=20.0, help="the batcher's gathering window")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two configurations")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(args.checkpoint)
    total = args.clients * args.requests
    print(
        f"API batching: demo-size model (random weights), CPU fp32, {args.clients} clients x {args.requests} VQA "
        f"requests, {args.max_tokens} new tokens each, window {args.window_ms:g} ms"
    )
    runs: dict[int, list[dict]] = {8: [], 1: []}
    for _ in range(args.rounds):
        for max_batch in (1, 8):
            runs[max_batch].append(measure(model.inferencer, max_batch, args))
    identical = all(r["answers"] == runs[1][0]["answers"] for rs in runs.values() for r in rs)
    summary = {}
    for max_batch, results in runs.items():
        best = max(results, key=lambda r: r["rps"])  # the least disturbed round of each
        summary[max_batch] = best
        rounds = ", ".join(f"{r['rps']:.2f}" for r in results)
        print(
            f"--max-batch {max_batch}: {best['rps']:6.2f} requests/s ({total} in {best['wall']:.2f} s)   "
            f"p50 {best['p50']:.3f} s   p95 {best['p95']:.3f} s   (rounds: {rounds} req/s)"
        )
    ratio = summary[8]["rps"] / summary[1]["rps"]
    print(
        f"batched / one by one: {ratio:.2f}x requests/s (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}); "
        f"answers identical: {identical}"
    )
    print(f"machine: {machine()}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
