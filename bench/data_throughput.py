"""Benchmark: can the data loader keep the trainer fed? Loader tokens/s vs debug-model training tokens/s.

Writes a MedSynth set (64 px, all tasks) to a temporary folder, then measures in one process:
- the loader (``build_loader`` on MedSynth's own mix) with 0 and 2 workers: records/s and tokens/s
  over ``--batches`` packs, after the first pack (worker start-up is reported apart);
- training of the ``debug`` model on the same packs: forward + backward + AdamW step, tokens/s.

Target: loader tokens/s / training tokens/s >= 5 (the loader must not be the bottleneck even for
the tiniest model; real models train orders of magnitude slower per token).

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src .venv/bin/python bench/data_throughput.py [--records 270 --batches 10]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

import torch

from _machine import machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from unimedvl.checkpoint.create import BUILTIN_CORPUS
from unimedvl.config import model_config
from unimedvl.data.loader import DataConfig, build_loader
from unimedvl.medsynth.generator import generate_medsynth
from unimedvl.models.unified import UnifiedModel
from unimedvl.tokenizer import Tokenizer


def measure_loader(cfg: DataConfig, model_cfg, tokenizer, batches: int):
    """(start-up seconds to the first pack, steady records/s, steady tokens/s, the packs)."""
    loader = build_loader(cfg, model_cfg, tokenizer)
    start = time.perf_counter()
    iterator = iter(loader)
    packs = [next(iterator)]
    first = time.perf_counter()
    packs.extend(itertools.islice(iterator, batches))
    elapsed = time.perf_counter() - first
    records = sum(len(p.sample_kinds) for p in packs[1:])
    tokens = sum(p.sequence_length for p in packs[1:])
    del iterator  # stops the workers
    return first - start, records / elapsed, tokens / elapsed, packs


def measure_training(model: UnifiedModel, packs) -> float:
    """Tokens/s of forward + backward + AdamW step over ``packs`` (the first one is a warm-up)."""
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-15)
    generator = torch.Generator().manual_seed(0)

    def step(batch):
        out = model(batch, generator=generator)
        (out["ce"] + out["mse"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(packs[0])
    start = time.perf_counter()
    for batch in packs[1:]:
        step(batch)
    return sum(p.sequence_length for p in packs[1:]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=270, help="MedSynth train records (all tasks)")
    parser.add_argument("--batches", type=int, default=10, help="loader packs timed per measurement (after the first)")
    parser.add_argument("--train-packs", type=int, default=2, help="packs timed in training (after a warm-up one)")
    parser.add_argument("--tokens", type=int, default=2048, help="expected_num_tokens of a pack")
    args = parser.parse_args()

    model_cfg = model_config("debug")
    tokenizer = Tokenizer.train_bpe([BUILTIN_CORPUS] * 4, vocab_size=model_cfg.llm.vocab_size)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_medsynth(tmp, n_train=args.records, n_test=0, seed=0, image_size=64)
        print(f"MedSynth: {args.records} records at 64 px in {time.perf_counter() - t0:.1f} s")
        common = dict(
            expected_num_tokens=args.tokens,
            max_num_tokens=args.tokens + args.tokens // 4,
            max_num_tokens_per_sample=args.tokens // 2,
        )
        results = {}
        for workers in (0, 2):
            cfg = DataConfig(os.path.join(tmp, "mix.yaml"), num_workers=workers, **common)
            results[workers] = measure_loader(cfg, model_cfg, tokenizer, args.batches)
            startup, rec_s, tok_s, _ = results[workers]
            print(
                f"loader, {workers} workers: {rec_s:8.1f} records/s  {tok_s:9.0f} tokens/s  "
                f"(first pack after {startup:.2f} s)"
            )
        packs = results[0][3]
        torch.manual_seed(0)
        model = UnifiedModel(model_cfg)
        packs = packs[: args.train_packs + 1]
        train_tok_s = measure_training(model, packs)
        mean_len = sum(p.sequence_length for p in packs[1:]) / (len(packs) - 1)
        print(
            f"training (debug model, fwd+bwd+AdamW): {train_tok_s:9.0f} tokens/s  "
            f"({len(packs) - 1} packs of {mean_len:.0f} tokens on average)"
        )
        for workers in (0, 2):
            ratio = results[workers][2] / train_tok_s
            print(
                f"loader tokens/s / training tokens/s, {workers} workers: {ratio:.1f}  "
                f"(target >= 5: {'met' if ratio >= 5 else 'NOT met'})"
            )


if __name__ == "__main__":
    main()
