"""Step-level batching of the HTTP API against today's whole-batch batching: staggered image edits.

The server runs in this process (uvicorn in a thread) on a checkpoint (the trained demo's, or a
random demo-size one). ``--clients`` clients, each with its own official ``openai`` client, send
``--requests`` edits each of 64 px images with per-request seeds, at ``--num-timesteps`` points with
the reference sampler, under one of two arrival patterns (``--arrivals``):

- ``open`` (the default; the case step-level batching is for): the edits arrive at fixed times
  ``--stagger`` seconds apart (arrival i from client i mod clients), whether or not the earlier ones
  were answered, so each later edit arrives while earlier ones are being denoised;
- ``closed`` (the first version of this bench): client c starts at c x ``--stagger`` and sends its
  edits one after the other, each when the previous one was answered; with 8 clients on a small
  machine both servers are soon saturated.

``--stagger`` takes several values: one scenario per value. In each, both configurations
(``step_batching`` on / off, same ``max_batch``) are measured in the same run, alternating for
``--rounds``; the images must agree (fp32 round-off: at most one grey level), since a request's
image does not depend on its batch-mates. requests/s is the number of edits over the time from the
first send to the last answer.

Before the scenarios it times, in the same process and without HTTP, the bound on what step-level
batching can gain on this machine where the other edits arrive while the first is denoised: today's
batching then serves the first alone and the rest as one batch (run(1) + run(clients - 1)),
step-level at best serves all of them as one batch (run(clients)). Where a batch of n costs much
more than a batch of 1 (a CPU) this ratio stays well under 2x; on a GPU whose step costs about the
same for 1 or 8 requests it approaches 2x. (Arrivals spread over longer than one batch make today's
batching run more, smaller batches, which can let step-level gain a little more than this.)

Prints, per scenario, requests/s of each configuration and their ratio (goal >= 1.5x), mean/p50/p95
latency, and the machine line.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/step_batching.py [--checkpoint DIR]
     [--arrivals open|closed] [--stagger 0.1 0.25 ...]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from dataclasses import replace

import numpy as np
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from api import load_model, run_clients  # noqa: E402  (bench/api.py)


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def edit(client, seed: int, args) -> tuple[np.ndarray, float]:
    """One edit over HTTP: (image, seconds from send to answer)."""
    start = time.perf_counter()
    reply = client.images.edit(
        model="demo",
        image=("scan.png", png(seed), "image/png"),
        prompt="Denoise this image.",
        extra_body={"seed": seed, "num_timesteps": args.num_timesteps},
    )
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply.data[0].b64_json))).convert("RGB"))
    return image, time.perf_counter() - start


def seed_of(client: int, k: int) -> int:
    return client * 100 + k


def closed_client(url: str, index: int, stagger: float, args) -> list[tuple[np.ndarray, float]]:
    """Client ``index``: starts at index x stagger, then one edit after the other (a closed loop)."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    time.sleep(index * stagger)
    return [edit(client, seed_of(index, k), args) for k in range(args.requests)]


def open_arrival(url: str, index: int, stagger: float, args) -> list[tuple[np.ndarray, float]]:
    """Arrival ``index`` (edit index // clients of client index % clients), sent at index x stagger."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0)
    time.sleep(index * stagger)
    return [edit(client, seed_of(index % args.clients, index // args.clients), args)]


def measure(inferencer, step_batching: bool, arrivals: str, stagger: float, args) -> dict:
    from unimedvl.api.server import BackgroundServer, create_app
    from unimedvl.api.settings import ServerSettings

    settings = ServerSettings(
        port=0,
        api_key="bench",
        max_batch=args.clients,
        batch_window_ms=args.window_ms,
        step_batching=step_batching,
        queue_size=max(64, args.clients * args.requests),
    )
    with BackgroundServer(create_app(inferencer, settings, model_id="demo")) as server:
        warm = argparse.Namespace(**{**vars(args), "requests": 1})
        closed_client(server.url, 999, 0.0, warm)  # warm-up
        if arrivals == "open":
            out = run_clients(args.clients * args.requests, lambda i: open_arrival(server.url, i, stagger, args))
        else:
            out = run_clients(args.clients, lambda c: closed_client(server.url, c, stagger, args))
    return {**out, "images": out["outputs"]}


def ceiling(inferencer, args) -> float:
    """(run(1) + run(clients - 1)) / run(clients) in this process: step-level's best gain on a burst."""
    from unimedvl.inference.inferencer import Request

    def request(seed: int) -> Request:
        return Request(
            [Image.open(io.BytesIO(png(seed))), "Denoise this image."],
            "edit",
            seed=seed,
            guidance=replace(inferencer.config.preset("edit"), num_timesteps=args.num_timesteps),
        )

    def timed(n: int) -> float:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            inferencer.run([request(seed_of(c, 0)) for c in range(n)])
            best = min(best, time.perf_counter() - start)
        return best

    one, rest, every = timed(1), timed(args.clients - 1), timed(args.clients)
    bound = (one + rest) / every
    print(
        f"bound on this machine (library, no HTTP): run(1) {one:.2f} s + run({args.clients - 1}) {rest:.2f} s = "
        f"{one + rest:.2f} s (today's best case) vs run({args.clients}) {every:.2f} s (step-level's best case): "
        f"{bound:.2f}x requests/s, the most step-level can gain where the other {args.clients - 1} edits arrive while "
        f"the first is denoised"
    )
    return bound


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint directory (default: a random demo-size one, made here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1, help="edits per client")
    parser.add_argument(
        "--arrivals",
        choices=("open", "closed"),
        default="open",
        help="open: edits sent at fixed staggered times; closed: each client waits for its answer",
    )
    parser.add_argument(
        "--stagger",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5],
        help="seconds between arrivals (open) or between the clients' starts (closed); one scenario each",
    )
    parser.add_argument("--num-timesteps", type=int, default=50)
    parser.add_argument("--window-ms", type=float, default=20.0, help="the batcher's gathering window")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two configurations")
    parser.add_argument("--no-bound", dest="bound", action="store_false", help="skip the library-level bound")
    args = parser.parse_args()
    if args.clients < 2 or args.requests < 1 or any(s < 0 for s in args.stagger):
        parser.error("--clients must be at least 2, --requests at least 1 and --stagger at least 0")

    model = load_model(args.checkpoint)
    path = args.checkpoint or "a random demo-size checkpoint"
    total = args.clients * args.requests
    print(
        f"step-level batching: {path}, CPU fp32, {args.arrivals} arrivals, {args.clients} clients x {args.requests} "
        f"edits (64 px, {args.num_timesteps} points, reference sampler), max_batch {args.clients}, "
        f"window {args.window_ms:g} ms"
    )
    if args.bound:
        ceiling(model.inferencer, args)
    worst, ratios = 0, []
    for stagger in args.stagger:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.rounds):
            for step_batching in (False, True):
                runs[step_batching].append(measure(model.inferencer, step_batching, args.arrivals, stagger, args))
        reference = runs[False][0]["images"]
        worst = max(
            [worst]
            + [
                int(np.abs(a.astype(int) - b.astype(int)).max())
                for rs in runs.values()
                for r in rs
                for a, b in zip(r["images"], reference)
            ]
        )
        print(f"-- {args.arrivals} arrivals, stagger {stagger:g} s:")
        summary = {}
        for step_batching, results in runs.items():
            best = max(results, key=lambda r: r["rps"])  # the least disturbed round of each
            summary[step_batching] = best
            rounds = ", ".join(f"{r['rps']:.2f}" for r in results)
            print(
                f"  {'step-level' if step_batching else 'whole batches':<13}: {best['rps']:6.2f} requests/s ({total} in "
                f"{best['wall']:.2f} s)   mean latency {best['mean']:.2f} s   p50 {best['p50']:.2f} s   "
                f"p95 {best['p95']:.2f} s   (rounds: {rounds} req/s)"
            )
        ratio = summary[True]["rps"] / summary[False]["rps"]
        paired = ", ".join(f"{s['rps'] / w['rps']:.2f}" for w, s in zip(runs[False], runs[True]))
        ratios.append(ratio)
        print(f"  mean latency, step-level / whole batches: {summary[True]['mean'] / summary[False]['mean']:.2f}x")
        print(
            f"  step-level / whole batches: {ratio:.2f}x requests/s, best rounds (each round: {paired}); "
            f"goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}"
        )
    print(f"largest pixel difference between any two runs of a scenario: {worst} grey level(s)")
    print(f"machine: {machine()}")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
