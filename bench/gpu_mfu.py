"""Benchmark: MFU of the trainer on one GPU: ~1B-parameter MoT language model, flex attention, bf16.

Builds a random checkpoint of a MoT language model of 1.19B parameters (hidden 2048, 12 layers,
two experts of ~0.53B each, vocab 32000; 1.38B with the 12-layer ViT and the release FLUX VAE),
feeds the real ``Trainer`` synthetic packed batches (text SFT + editing samples with 256x256
images, ~16k tokens per pack) in one process (autocast bf16, no sharding), and prints
tokens/s, MFU (trainer's FLOP count / elapsed / bf16 peak of the GPU) and peak memory per step,
then the median over the timed steps. Goal on an H100: MFU >= 40%.

``--dry-run``: the debug size on CPU, 2 steps, SDPA, fp32 (checks the script without a GPU).

Run: HF_HUB_OFFLINE=1 PYTHONPATH=src python bench/gpu_mfu.py [--steps 10] [--tokens 16384]
     HF_HUB_OFFLINE=1 PYTHONPATH=src python bench/gpu_mfu.py --dry-run
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from unimedvl.models.packed_batch import TextSplit, VaeImageSplit, VitImageSplit, build_packed_batch

MOT_1B = {
    "llm": {
        "vocab_size": 32000,
        "hidden_size": 2048,
        "intermediate_size": 5504,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "rope_theta": 1_000_000.0,
        "max_position_embeddings": 32768,
    },
    "vit": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "image_size": 980,
    },
    "max_latent_size": 64,
    "vit_max_num_patch_per_side": 70,
}


class SyntheticLoader:
    """Endless packed batches of text-SFT and editing samples (same contract as the data loader)."""

    def __init__(self, model_cfg, special, tokens: int, image: int, seed: int = 0, state=None):
        self.cfg, self.special, self.tokens, self.image = model_cfg, special, tokens, image
        self.g = torch.Generator().manual_seed(seed)
        self.count = int(state["count"]) if state else 0
        self.stats: dict = {}

    def _ids(self, n):
        return torch.randint(10, min(self.cfg.llm.vocab_size, 30000), (n,), generator=self.g).tolist()

    def _pack(self):
        samples, total, k = [], 0, 0
        vit = self.image // 14 * 14
        while total < self.tokens:
            if k % 3 == 2:
                src = torch.rand(3, self.image, self.image, generator=self.g) * 2 - 1
                tgt = torch.rand(3, self.image, self.image, generator=self.g) * 2 - 1
                sample = [
                    VaeImageSplit(image=src),
                    VitImageSplit(src[:, :vit, :vit]),
                    TextSplit(self._ids(48)),
                    TextSplit(self._ids(96), loss=True),
                    VaeImageSplit(image=tgt, noised=True),
                ]
                n = 2 * (self.image // 16) ** 2 + (vit // 14) ** 2 + 160
            else:
                n = min(2048, self.tokens - total)
                sample = [TextSplit(self._ids(n // 4)), TextSplit(self._ids(n - n // 4 - 3), loss=True)]
            samples.append(sample)
            total += n
            k += 1
        return build_packed_batch(samples, self.special, self.cfg)

    def __iter__(self):
        while True:
            self.count += 1
            yield self._pack()

    def state_dict(self):
        return {"count": self.count}

    def has_generation_data(self):
        return True

    def has_understanding_data(self):
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="debug size on CPU, 2 steps")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per packed batch")
    parser.add_argument("--image", type=int, default=256, help="image side in pixels (editing samples)")
    parser.add_argument("--attn", default="flex", help="attention backend")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    args = parser.parse_args()

    from unimedvl.checkpoint.create import init_checkpoint
    from unimedvl.train.config import TrainConfig
    from unimedvl.train.trainer import Trainer

    logging.basicConfig(level=logging.WARNING)
    if args.dry_run:
        size, device, dtype, attn, steps, warm, tokens, image = "debug", "cpu", "fp32", "sdpa", 2, 0, 512, 32
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run on a CPU")
        size, device, dtype, attn, steps, warm, tokens, image = (
            None,
            "cuda",
            "bf16",
            args.attn,
            args.steps,
            3,
            args.tokens,
            args.image,
        )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if size is None:
            (tmp / "mot_1b.yaml").write_text(yaml.safe_dump(MOT_1B))
            size = str(tmp / "mot_1b.yaml")
        ckpt = init_checkpoint(size, tmp / "ckpt", seed=0)
        (tmp / "mix.yaml").write_text("synthetic: {}\n")
        cfg = TrainConfig(
            dataset_config_file=str(tmp / "mix.yaml"),
            model_path=str(ckpt),
            checkpoint_dir=str(tmp / "run"),
            total_steps=warm + steps,
            save_every=10**6,
            warmup_steps=0,
            lr=1e-5,
            attn_backend=attn,
            dtype=dtype,
            device=device,
            gradient_checkpointing=args.gradient_checkpointing,
            progress_bar=False,
            tensorboard=False,
            ema=0.999,
            expected_num_tokens=tokens,
            max_num_tokens=tokens * 2,
            max_num_tokens_per_sample=tokens,
        )

        def factory(data_cfg, model_cfg, tokenizer, rank=0, world_size=1, state=None):
            return SyntheticLoader(model_cfg, tokenizer.special, tokens, image, seed=rank, state=state)

        t = Trainer(cfg, loader_factory=factory).setup()
        n_params = sum(p.numel() for p in t.model.parameters()) / 1e6
        dev_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        print(
            f"device: {dev_name}; model: {n_params:.1f}M parameters; attention {attn}; dtype {dtype}; "
            f"{tokens} tokens per pack; peak bf16 FLOP/s: {t.peak or 'unknown'}"
        )
        results = []
        for i in range(warm + steps):
            m = t.train_step()
            t.step += 1
            mfu = m.get("mfu")
            tag = "warm-up" if i < warm else "timed"
            print(
                f"step {i + 1:>3} ({tag}): loss {m['loss']:.4f}  {m['tokens_per_s']:>9.0f} tok/s  "
                f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}  peak mem {m['peak_mem_gb']:.2f} GB  "
                f"step {m['step_time']:.3f}s"
            )
            if i >= warm:
                results.append(m)
        tps = statistics.median(r["tokens_per_s"] for r in results)
        mfus = [r["mfu"] for r in results if "mfu" in r]
        mfu_text = f"{100 * statistics.median(mfus):.1f}%" if mfus else "n/a (no GPU peak)"
        print(f"median: {tps:.0f} tok/s, MFU {mfu_text}, peak memory {max(r['peak_mem_gb'] for r in results):.2f} GB")


if __name__ == "__main__":
    main()
