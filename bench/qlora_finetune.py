"""Does QLoRA still learn? LoRA on the float base vs QLoRA int8 vs QLoRA nf4 on a task the model has not seen.

The task: "What is the size of the lesion?" (small | medium | large) on MedSynth images with one
lesion, a question the demo checkpoint (``unimedvl demo``) never saw (its VQA asks modality,
presence, location and count). Train records come from the demo's MedSynth train images, test
records from its test images. Each method fine-tunes the same adapters (rank 8 on the attention and
MLP projections of both experts, LLM and ViT frozen, understanding only) with the same data, seed and steps;
the adapters are then evaluated on the float base (base + ``--adapter``, what a merged checkpoint
gives): exact-match accuracy with its 95% bootstrap interval.

Run (2 CPU cores, a few minutes per method)::

    PYTHONPATH=src python bench/qlora_finetune.py --demo /work/demo_seed0 --out /tmp/qlora_bench --steps 500

Prints the loss curves (mean of every 10 steps) side by side, the final training loss (mean of
the last 10 steps) of each method as a ratio to LoRA's, and the accuracies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import yaml

QUESTION = "What is the size of the lesion?"
METHODS = ("none", "int8", "nf4")
LABELS = {"none": "LoRA (float base)", "int8": "QLoRA int8", "nf4": "QLoRA nf4"}


def build_task(demo: Path, out: Path) -> tuple[Path, Path, list[dict]]:
    """Write the size-question train/test JSONL, dataset_info and mix; returns (mix, info, test records)."""
    src = demo / "data" / "medsynth"
    out.mkdir(parents=True, exist_ok=True)
    test = []
    for split in ("train", "test"):
        rows = []
        for line in (src / f"{split}_understanding.jsonl").read_text().splitlines():
            r = json.loads(line)
            lesions = r.get("lesions") or []
            if len(lesions) != 1 or not r.get("input_img"):
                continue
            size = lesions[0]["size"]
            rows.append({**r, "sample_id": r["sample_id"] + "_size", "question_type": "lesion_size", "answer": size,
                         "message": [{"from": "human", "value": "<image>\n" + QUESTION},
                                     {"from": "gpt", "value": size}]})
        (out / f"{split}_size.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if split == "test":
            test = rows
    info = {"vlm_sft": {f"size_{split}": {"data_dir": str(src), "jsonl_path": str(out / f"{split}_size.jsonl"),
                                          "num_total_samples": len((out / f"{split}_size.jsonl").read_text().splitlines())}
                        for split in ("train", "test")}}
    demo_mix = yaml.safe_load((src / "mix.yaml").read_text())["vlm_sft"]
    mix = {"vlm_sft": {**demo_mix, "dataset_names": ["size_train"], "weight": {"size_train": 1},
                       "num_used_data": {"size_train": [0, 0]}}}
    (out / "dataset_info.yaml").write_text(yaml.safe_dump(info))
    (out / "mix.yaml").write_text(yaml.safe_dump(mix))
    return out / "mix.yaml", out / "dataset_info.yaml", test


def finetune(base: Path, mix: Path, info: Path, out: Path, method: str, steps: int, seed: int, lr: float,
             targets: list[str]) -> tuple[Path, list, float]:  # fmt: skip
    from unimedvl.train.config import TrainConfig
    from unimedvl.train.trainer import Trainer

    cfg = TrainConfig(model_path=str(base), dataset_config_file=str(mix), dataset_info_file=str(info),
                      checkpoint_dir=str(out / method), total_steps=steps, save_every=steps, warmup_steps=20,
                      lr=lr, lora_target_modules=targets, lr_scheduler="constant", seed=seed, ema=0.0, lora_rank=8, lora_alpha=16.0,
                      quantize_base=method, freeze_llm=True, freeze_vit=True, visual_gen=False,
                      expected_num_tokens=512, max_num_tokens=1024, max_num_tokens_per_sample=1024,
                      gradient_checkpointing=False, progress_bar=False, tensorboard=False, log_every=1)
    start = time.perf_counter()
    Trainer(cfg).train()
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / method / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return out / method / f"step_{steps:07d}", losses, seconds


def evaluate(step: Path, test: list[dict], src: Path) -> list[float]:
    from unimedvl.inference.api import UniMedVL

    model = UniMedVL.from_pretrained(step, device="cpu")  # the base the adapter names + the adapter
    scores = []
    for r in test:
        answer = model.ask(str(src / r["input_img"][0]["path"]), QUESTION, max_new_tokens=4)
        scores.append(float(str(answer).strip().lower() == r["answer"]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="/work/demo_seed0", help="output folder of `unimedvl demo`")
    parser.add_argument("--out", default="/tmp/qlora_bench")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=150, help="test records evaluated (the first N)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from unimedvl.metrics.uncertainty import mean_estimate

    demo, out = Path(args.demo), Path(args.out)
    base = sorted((demo / "train" / "run").glob("step_*"))[-1]
    mix, info, test = build_task(demo, out / "data")
    test = test[: args.test]
    results = {}
    for method in args.methods.split(","):
        step, losses, seconds = finetune(base, mix, info, out, method, args.steps, args.seed, args.lr,
                                         args.targets.split(","))
        scores = evaluate(step, test, demo / "data" / "medsynth")
        results[method] = {"losses": losses, "seconds": seconds, "accuracy": mean_estimate(scores),
                           "final_loss": sum(losses[-10:]) / len(losses[-10:])}
        print(f"{method}: {seconds:.0f} s, final loss {results[method]['final_loss']:.4f}, "
              f"accuracy {results[method]['accuracy']}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    methods = list(results)
    print(f"\nlr {args.lr}, LoRA rank 8 on {args.targets}")
    print(f"base {base}; task: {QUESTION!r}; train {len((out / 'data' / 'train_size.jsonl').read_text().splitlines())} "
          f"records, test {len(test)}; {args.steps} steps, seed {args.seed}; load {os.getloadavg()[0]:.2f}")
    print("| steps | " + " | ".join(LABELS[m] for m in methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for k in range(0, args.steps, 10):
        cells = [f"{sum(results[m]['losses'][k:k + 10]) / len(results[m]['losses'][k:k + 10]):.4f}" for m in methods]
        print(f"| {k + 1}-{min(k + 10, args.steps)} | " + " | ".join(cells) + " |")
    ref = results.get("none")
    for m in methods:
        r = results[m]
        acc = r["accuracy"]
        ratio = f"{r['final_loss'] / ref['final_loss']:.3f}" if ref else "-"
        print(f"{LABELS[m]}: final loss {r['final_loss']:.4f} (x{ratio} of LoRA), accuracy {acc['value']:.3f} "
              f"[{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] (n={acc['n']}), {r['seconds']:.0f} s training")


if __name__ == "__main__":
    main()
