"""Benchmark inference on the KV cache against the reference's ways, CPU fp32, random weights.

For each model size (``debug``, ``small``; ``UnifiedModel(model_config(size))``):

1. Image editing (one request, three guidance branches, ``--steps`` sampling points): the
   branches evaluated in one batched forward per step (ours) vs one forward per branch
   (the reference's way; baseline here: the same velocity function called once per branch).
2. Greedy decoding of ``--new-tokens`` tokens after an image + question context: our
   preallocated KV cache vs a cache that ``torch.cat``s the new key/value onto the old ones
   every step (baseline implemented here, duck-typed to ``forward_cached``). The copy grows
   with KV width x context, so the same comparison also runs on a thin model with the
   release's KV width (4 KV heads x 128) after ``--long-context`` cached positions.
3. Eight VQA requests (different images and questions): one batched ``Inferencer.run`` vs one
   call per request; the answers must be identical.

Every pair runs interleaved in one process (medians of ``--repeats``), so both sides see the
same machine load. Ratios > 1 mean ours is faster.

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/inference.py [--sizes debug small]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.checkpoint.create import BUILTIN_CORPUS
from unimedvl.config import model_config
from unimedvl.imaging.transforms import ImageTransform
from unimedvl.inference.inferencer import VIT_TRANSFORM, GuidedVelocity, Inferencer, Request
from unimedvl.models.packed_batch import TextSplit
from unimedvl.models.unified import UnifiedModel
from unimedvl.sampling.flow import GuidanceConfig, euler_sample
from unimedvl.tokenizer import Tokenizer


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin (callers warm each one up first)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def image(side: int, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(side, side, 3) * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Baseline: a KV cache that concatenates every step (a full copy of every layer's keys per token).


class ConcatCache:
    """Per layer (rows, Hkv, L, D) keys/values, grown with torch.cat at every decoding step."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.num_rows = keys[0].shape[0]

    def plan(self, rows, query_lens, mode, write):
        assert rows is None and query_lens == 1 and write, "the baseline only decodes one token per row"
        return ConcatStep(self)


class ConcatStep:
    def __init__(self, cache: ConcatCache):
        self.cache = cache
        self.num_tokens = cache.num_rows

    def attend(self, layer: int, q, k, v):
        c = self.cache
        c.keys[layer] = torch.cat([c.keys[layer], k[:, :, None]], dim=2)  # k: (rows, Hkv, D)
        c.values[layer] = torch.cat([c.values[layer], v[:, :, None]], dim=2)
        rows, heads, dim = q.shape
        out = F.scaled_dot_product_attention(
            q[:, :, None], c.keys[layer], c.values[layer], enable_gqa=heads != k.shape[1]
        )
        return out.reshape(rows, heads, dim)

    def commit(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# The three measurements.


def bench_guidance(inf: Inferencer, side: int, steps: int, repeats: int) -> None:
    cfg = GuidanceConfig(4.0, 2.0, (0.0, 1.0), "text_channel", 0.0, 3.0, steps)
    plan = inf.prepare([Request([image(side, 0), "Remove the noise from this CT image."], "edit", guidance=cfg)])
    job = plan.jobs[0]
    stride = inf.model.config.vae_image_stride
    grid = (job.size[0] // stride, job.size[1] // stride)
    velocity = GuidedVelocity(plan.pool, [(job.full, job.cfg_text, job.cfg_img)], [grid])
    noise = inf.initial_noise(grid, 0)

    def one_by_one(x, t, branches):  # the reference: one forward per guidance branch
        return {b: velocity(x, t, (b,))[b] for b in branches}

    fns = {
        "batched": lambda: euler_sample(velocity, noise, velocity.counts, cfg),
        "per-branch": lambda: euler_sample(one_by_one, noise, velocity.counts, cfg),
    }
    a, b = (fn() for fn in fns.values())  # warm-up and check
    err = (a - b).abs().max().item()
    t = interleaved(fns, repeats)
    ctx = [plan.pool.length(c) for c in (job.full, job.cfg_text, job.cfg_img)]
    print(
        f"  image editing {job.size[0]}x{job.size[1]} ({grid[0] * grid[1]} latent tokens, contexts {ctx} tokens), "
        f"{steps - 1} steps x 3 branches: batched {t['batched']:.3f} s, per-branch {t['per-branch']:.3f} s, "
        f"ratio per-branch/batched {t['per-branch'] / t['batched']:.2f} (max |latent diff| {err:.1e})"
    )


def compare_caches(lm, prefilled: Callable[[], tuple], first_pos: int, new_tokens: int, repeats: int):
    """Greedy decoding from ``prefilled()`` = (KVCache, last hidden): ours vs the concat baseline."""

    def run(cache, last):
        out = []
        for i in range(new_tokens):
            token = lm.logits(last).argmax(-1)
            out.append(int(token))
            last = lm.forward_cached(lm.embed(token), torch.tensor([first_pos + i]), cache, query_lens=1)
        return out

    def preallocated():
        cache, last = prefilled()
        cache.reserve(cache.lengths[0] + new_tokens)  # room for the whole answer
        return run(cache, last)

    def concatenating():
        cache, last = prefilled()
        n = cache.lengths[0]
        concat = ConcatCache([k[:, :, :n].clone() for k in cache.keys], [v[:, :, :n].clone() for v in cache.values])
        return run(concat, last)

    same = preallocated() == concatenating()  # also the warm-up
    return same, interleaved({"preallocated": preallocated, "concat": concatenating}, repeats)


def report_decoding(what: str, new_tokens: int, same: bool, t: dict[str, float]) -> None:
    print(
        f"  decode {new_tokens} tokens {what}: preallocated {new_tokens / t['preallocated']:.1f} tok/s, "
        f"concat-every-step {new_tokens / t['concat']:.1f} tok/s, ratio {t['concat'] / t['preallocated']:.2f} "
        f"(same tokens: {same})"
    )


@torch.no_grad()
def bench_decoding(inf: Inferencer, new_tokens: int, repeats: int) -> None:
    """After an image + question context, as answering a VQA request does."""
    lm = inf.model.language_model
    plan = inf.prepare([Request([image(256, 1), "Describe the findings in this chest X-ray."])])
    pool, ctx = plan.pool, plan.jobs[0].full
    batch, hidden = pool.embed([[TextSplit([])]])  # an open text: just <|im_start|>

    def prefilled():  # both decoders start from the same keys and the same last hidden state
        cache = pool.cache.select([ctx.row])
        return cache, lm.forward_cached(hidden, pool.positions(batch, [ctx.rope]), cache, query_lens=1)

    same, t = compare_caches(lm, prefilled, ctx.rope + 1, new_tokens, repeats)
    report_decoding(f"after a {pool.length(ctx) + 1}-token image + question context", new_tokens, same, t)


@torch.no_grad()
def bench_release_kv(context: int, new_tokens: int, repeats: int) -> None:
    """The release's KV width (4 KV heads x 128, 28 query heads) in a thin 4-layer model, long context.

    The copy a concatenating cache makes grows with KV width x context, so this is where the
    difference shows; the cached keys are random (prefilling thousands of tokens on a CPU would
    dominate the run and does not change decoding cost).
    """
    from unimedvl.config import LLMConfig
    from unimedvl.models.language import LanguageModel

    cfg = LLMConfig(
        vocab_size=1024,
        hidden_size=512,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=28,
        num_key_value_heads=4,
        head_dim=128,
        layer_module="Qwen2DecoderLayer",
    )
    torch.manual_seed(0)
    lm = LanguageModel(cfg).eval()
    keys = [torch.randn(1, 4, context, 128) for _ in range(2 * cfg.num_hidden_layers)]

    def prefilled():
        cache = lm.new_cache(rows=1, capacity=context + 1)
        for layer in range(cfg.num_hidden_layers):
            cache.keys[layer][:, :, :context] = keys[2 * layer]
            cache.values[layer][:, :, :context] = keys[2 * layer + 1]
        cache.lengths[0] = context
        last = lm.forward_cached(lm.embed(torch.tensor([1])), torch.tensor([context]), cache, query_lens=1)
        return cache, last

    same, t = compare_caches(lm, prefilled, context + 1, new_tokens, repeats)
    report_decoding(
        f"after {context} cached positions, release KV width (4 layers, 4 KV heads x 128)", new_tokens, same, t
    )


def bench_vqa(inf: Inferencer, new_tokens: int, repeats: int) -> None:
    questions = [
        "What imaging modality is this?",
        "Is there a lesion?",
        "Where is the lesion located?",
        "How many lesions are there?",
        "Is this a CT scan?",
        "Describe the findings.",
        "Is there a pleural effusion?",
        "What is the impression?",
    ]
    sides = [192, 224, 256, 160, 224, 256, 192, 240]
    requests = [
        Request([image(side, 10 + i), q], max_new_tokens=new_tokens)
        for i, (side, q) in enumerate(zip(sides, questions))
    ]

    def batched():
        return [r.token_ids for r in inf.run(requests)]

    def single():
        return [inf.run([r])[0].token_ids for r in requests]

    same = batched() == single()
    t = interleaved({"batched": batched, "single": single}, repeats)
    tokens = sum(len(ids) for ids in batched())
    print(
        f"  8 VQA requests (images 160-256 px, up to {new_tokens} new tokens, {tokens} generated): batched "
        f"{t['batched']:.3f} s, one by one {t['single']:.3f} s, ratio {t['single'] / t['batched']:.2f} "
        f"(same answers: {same})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["debug", "small"])
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats of each measurement (median)")
    parser.add_argument("--steps", type=int, default=6, help="sampling points (steps + 1) for image editing")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens decoded in the cache comparison")
    parser.add_argument("--long-context", type=int, default=4096, help="cached positions, release-KV decode")
    parser.add_argument("--vqa-tokens", type=int, default=16, help="max new tokens per VQA request")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    for size in args.sizes:
        cfg = model_config(size)
        torch.manual_seed(0)
        model = UnifiedModel(cfg).eval()
        with torch.no_grad():  # a fresh llm2vae is zero: give the velocity some weight (timing is the same)
            model.llm2vae.weight.normal_(0.0, 0.02)
        tokenizer = Tokenizer.train_bpe([BUILTIN_CORPUS] * 4, vocab_size=cfg.llm.vocab_size)
        vae = ImageTransform(cfg.vae_image_stride, 256, 256)  # the spec's speed setting (min 256)
        vit = ImageTransform(14, min(980, cfg.vit_max_num_patch_per_side * 14), 224, VIT_TRANSFORM.max_pixels)
        inf = Inferencer(model, tokenizer, vae, vit)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(
            f"{size}: {params:.1f}M parameters (LLM hidden {cfg.llm.hidden_size}, {cfg.llm.num_hidden_layers} "
            f"layers), fp32, VAE min/max 256, ViT min 224"
        )
        with torch.no_grad():
            bench_guidance(inf, 256, args.steps, args.repeats)
            bench_decoding(inf, args.new_tokens, args.repeats)
            bench_vqa(inf, args.vqa_tokens, args.repeats)
    print("release KV width:")
    bench_release_kv(args.long_context, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
