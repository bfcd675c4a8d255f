"""Step-level batching of the HTTP API against today's whole-batch batching: staggered image edits.

The server runs in this process (uvicorn in a thread) on a checkpoint (the trained demo's, or a
random demo-size one). ``--clients`` threads, each with its own official ``openai`` client, start
``--stagger`` seconds apart and send ``--requests`` edits each, one after the other (a closed
loop), of 64 px images with per-request seeds, at ``--num-timesteps`` points with the reference
sampler. Both configurations (``step_batching`` on / off, same ``max_batch``) are measured in the
same run, alternating for ``--rounds``; the images must agree (fp32 round-off: at most one grey
level), since a request's image does not depend on its batch-mates.

Prints requests/s of each and their ratio (goal >= 1.5x), mean/p50/p95 latency and the machine line.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/step_batching.py [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time

import numpy as np
from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from api import load_model, run_clients  # noqa: E402  (bench/api.py)
from PIL import Image


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def one_client(url: str, index: int, args) -> list[tuple[np.ndarray, float]]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    time.sleep(index * args.stagger)
    out = []
    for k in range(args.requests):
        seed = index * 100 + k
        start = time.perf_counter()
        reply = client.images.edit(model="demo", image=("scan.png", png(seed), "image/png"), prompt="Denoise this image.",
                                   extra_body={"seed": seed, "num_timesteps": args.num_timesteps})  # fmt: skip
        image = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply.data[0].b64_json))).convert("RGB"))
        out.append((image, time.perf_counter() - start))
    return out


def measure(inferencer, step_batching: bool, args) -> dict:
    from unimedvl.api.server import BackgroundServer, create_app
    from unimedvl.api.settings import ServerSettings

    settings = ServerSettings(port=0, api_key="bench", max_batch=args.clients, batch_window_ms=args.window_ms,
                              step_batching=step_batching)  # fmt: skip
    with BackgroundServer(create_app(inferencer, settings, model_id="demo")) as server:
        warm = argparse.Namespace(**{**vars(args), "requests": 1, "stagger": 0.0})
        one_client(server.url, 999, warm)  # warm-up
        out = run_clients(args.clients, lambda c: one_client(server.url, c, args))
    return {**out, "images": out["outputs"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random demo-size one, made here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2, help="edits per client")
    parser.add_argument("--stagger", type=float, default=0.25, help="seconds between the clients' starts")
    parser.add_argument("--num-timesteps", type=int, default=50)
    parser.add_argument("--window-ms", type=float, default=20.0, help="the batcher's gathering window")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two configurations")
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    path = args.checkpoint or "a random demo-size checkpoint"
    total = args.clients * args.requests
    print(f"step-level batching: {path}, CPU fp32, {args.clients} clients {args.stagger:g} s apart x {args.requests} "
          f"edits (64 px, {args.num_timesteps} points, reference sampler), max_batch {args.clients}")  # fmt: skip
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.rounds):
        for step_batching in (False, True):
            runs[step_batching].append(measure(model.inferencer, step_batching, args))
    reference = runs[False][0]["images"]
    worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for rs in runs.values() for r in rs
                for a, b in zip(r["images"], reference))  # fmt: skip
    summary = {}
    for step_batching, results in runs.items():
        best = max(results, key=lambda r: r["rps"])  # the least disturbed round of each
        summary[step_batching] = best
        rounds = ", ".join(f"{r['rps']:.2f}" for r in results)
        print(f"{'step-level' if step_batching else 'whole batches':<13}: {best['rps']:6.2f} requests/s ({total} in "
              f"{best['wall']:.2f} s)   mean latency {best['mean']:.2f} s   p50 {best['p50']:.2f} s   p95 {best['p95']:.2f} s   (rounds: {rounds} req/s)")
    ratio = summary[True]["rps"] / summary[False]["rps"]
    print(f"mean latency, step-level / whole batches: {summary[True]['mean'] / summary[False]['mean']:.2f}x")
    print(f"step-level / whole batches: {ratio:.2f}x requests/s (goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}); "
          f"largest pixel difference between any two runs: {worst} grey level(s)")  # fmt: skip
    print(f"machine: {machine()}")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
