"""Does QLoRA still learn? LoRA on the float base vs QLoRA int8 vs QLoRA nf4 on a task the model has not seen.

The demo checkpoint (``unimedvl demo``) was trained on MedSynth VQA asking modality, presence,
location and count (plus reports and generation). ``--task`` picks a question it never saw:

- ``anatomy``: "Which part of the body is shown?" (chest | brain | eye | tissue, from the image's
  modality: CT and X-ray chest, MRI brain, fundus eye, histology tissue): new words for a fact
  its features already carry (it answers the modality question 100% right);
- ``normal``: "Is this image normal?" (normal | abnormal: no lesion or some): a new wording of the
  presence question, with new answer words;
- ``size``: "What is the size of the lesion?" (small | large) on images with one lesion: a fact the
  demo never had to see (its ViT is frozen at random initialisation during the demo).

Train records come from the demo's MedSynth understanding train images (every record with an image,
whatever its original question), test records from its test images. Each method fine-tunes the same
adapters (rank 8 on the attention and MLP projections of both experts, LLM and ViT frozen,
understanding only) with the same data, seed and steps; the adapters are then evaluated on the
float base (base + ``--adapter``, what a merged checkpoint gives): exact-match accuracy with its 95%
bootstrap interval, beside the majority baseline (the train set's most common answer, on the test set).

Run (2 CPU cores, a few minutes per method)::

    PYTHONPATH=src python bench/qlora_finetune.py --task anatomy --demo /work/demo_seed0 --out /tmp/qlora_bench

Prints the loss curves (mean of every 10 steps) side by side, the final training loss (mean of
the last 10 steps) of each method as a ratio to LoRA's, and the accuracies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import yaml

ANATOMY = {"ct": "chest", "x-ray": "chest", "mri": "brain", "fundus": "eye", "histology": "tissue"}


def _size(r: dict) -> str | None:
    lesions = r.get("lesions") or []
    return lesions[0]["size"] if len(lesions) == 1 else None


TASKS = {  # name: (question, answer of a MedSynth record or None to skip it)
    "anatomy": ("Which part of the body is shown?", lambda r: ANATOMY[r["modality"]]),
    "normal": ("Is this image normal?", lambda r: "abnormal" if r.get("lesions") else "normal"),
    "size": ("What is the size of the lesion?", _size),
}
METHODS = ("none", "int8", "nf4")
LABELS = {"none": "LoRA (float base)", "int8": "QLoRA int8", "nf4": "QLoRA nf4"}


def build_task(demo: Path, out: Path, task: str) -> tuple[Path, Path, list[dict], list[dict]]:
    """Write the task's train/test JSONL, dataset_info and mix; returns (mix, info, train records, test records)."""
    question, answer_of = TASKS[task]
    src = demo / "data" / "medsynth"
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    for split in ("train", "test"):
        rows = []
        for line in (src / f"{split}_understanding.jsonl").read_text().splitlines():
            r = json.loads(line)
            answer = answer_of(r) if r.get("input_img") else None
            if answer is None:
                continue
            rows.append(
                {
                    **r,
                    "sample_id": f"{r['sample_id']}_{task}",
                    "question_type": task,
                    "answer": answer,
                    "message": [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": answer}],
                }
            )
        (out / f"{split}_{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        records[split] = rows
    info = {
        "vlm_sft": {
            f"{task}_{split}": {
                "data_dir": str(src),
                "jsonl_path": str(out / f"{split}_{task}.jsonl"),
                "num_total_samples": len(records[split]),
            }
            for split in ("train", "test")
        }
    }
    demo_mix = yaml.safe_load((src / "mix.yaml").read_text())["vlm_sft"]
    mix = {
        "vlm_sft": {
            **demo_mix,
            "dataset_names": [f"{task}_train"],
            "weight": {f"{task}_train": 1},
            "num_used_data": {f"{task}_train": [0, 0]},
        }
    }
    (out / "dataset_info.yaml").write_text(yaml.safe_dump(info))
    (out / "mix.yaml").write_text(yaml.safe_dump(mix))
    return out / "mix.yaml", out / "dataset_info.yaml", records["train"], records["test"]


def majority(train: list[dict], test: list[dict]) -> tuple[str, dict]:
    """The train set's most common answer and its accuracy (with interval) on the test records."""
    from unimedvl.metrics.uncertainty import mean_estimate

    top = Counter(r["answer"] for r in train).most_common(1)[0][0]
    return top, mean_estimate([float(r["answer"] == top) for r in test])


def finetune(
    base: Path, mix: Path, info: Path, out: Path, method: str, steps: int, seed: int, lr: float, targets: list[str]
) -> tuple[Path, list, float]:
    from unimedvl.train.config import TrainConfig
    from unimedvl.train.trainer import Trainer

    cfg = TrainConfig(
        model_path=str(base),
        dataset_config_file=str(mix),
        dataset_info_file=str(info),
        checkpoint_dir=str(out / method),
        total_steps=steps,
        save_every=steps,
        warmup_steps=20,
        lr=lr,
        lora_target_modules=targets,
        lr_scheduler="constant",
        seed=seed,
        ema=0.0,
        lora_rank=8,
        lora_alpha=16.0,
        quantize_base=method,
        freeze_llm=True,
        freeze_vit=True,
        visual_gen=False,
        expected_num_tokens=512,
        max_num_tokens=1024,
        max_num_tokens_per_sample=1024,
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        log_every=1,
    )
    start = time.perf_counter()
    Trainer(cfg).train()
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / method / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return out / method / f"step_{steps:07d}", losses, seconds


def evaluate(step: Path, test: list[dict], src: Path, question: str, quantize: str | None = None) -> list[float]:
    """0/1 scores of the adapters in ``step`` on the base they name, held as loaded or quantised (``quantize``)."""
    from unimedvl.inference.api import UniMedVL

    model = UniMedVL.from_pretrained(step, device="cpu", quantize=quantize)  # the base the adapter names + adapter
    scores = []
    for r in test:
        answer = model.ask(str(src / r["input_img"][0]["path"]), question, max_new_tokens=8)
        scores.append(float(str(answer).strip().lower() == r["answer"]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="anatomy", choices=list(TASKS))
    parser.add_argument("--demo", default="/work/demo_seed0", help="output folder of `unimedvl demo`")
    parser.add_argument("--out", default="/tmp/qlora_bench")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=0, help="test records evaluated (the first N; 0: all)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the runs --out/results.json already holds (no training); evaluate what is missing",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from _machine import machine
    from unimedvl.metrics.uncertainty import mean_estimate

    demo, out = Path(args.demo), Path(args.out)
    base = sorted((demo / "train" / "run").glob("step_*"))[-1]
    question = TASKS[args.task][0]
    mix, info, train, test = build_task(demo, out / "data", args.task)
    test = test[: args.test or None]
    top, baseline = majority(train, test)
    store = out / "results.json"
    results = json.loads(store.read_text()) if args.reuse and store.is_file() else {}
    src = demo / "data" / "medsynth"
    for method in args.methods.split(","):
        if method not in results:
            step, losses, seconds = finetune(
                base, mix, info, out, method, args.steps, args.seed, args.lr, args.targets.split(",")
            )
            results[method] = {
                "losses": losses,
                "seconds": seconds,
                "final_loss": sum(losses[-10:]) / 10,
                "accuracy": mean_estimate(evaluate(step, test, src, question)),
            }
            print(
                f"{method}: {seconds:.0f} s, final loss {results[method]['final_loss']:.4f}, "
                f"accuracy {results[method]['accuracy']}",
                flush=True,
            )
        if method == "int8" and "accuracy_on_trained_base" not in results[method]:
            # The adapters on the base they were trained against (int8 inference runs on a CPU; nf4 needs CUDA).
            step = out / method / f"step_{args.steps:07d}"
            results[method]["accuracy_on_trained_base"] = mean_estimate(evaluate(step, test, src, question, "int8"))
        store.write_text(json.dumps(results, indent=2))
    methods = [m for m in METHODS if m in results]
    print(f"\nmachine: {machine()}; lr {args.lr}, LoRA rank 8 on {args.targets}")
    print(
        f"base {base}; task {args.task}: {question!r}; train {len(train)} records, test {len(test)}; "
        f"{args.steps} steps, seed {args.seed}; load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"majority baseline ({top!r}): {baseline['value']:.3f} [{baseline['ci95'][0]:.3f}, {baseline['ci95'][1]:.3f}]"
    )
    print("| steps | " + " | ".join(LABELS[m] for m in methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for k in range(0, args.steps, 10):
        cells = [
            f"{sum(results[m]['losses'][k : k + 10]) / len(results[m]['losses'][k : k + 10]):.4f}" for m in methods
        ]
        print(f"| {k + 1}-{min(k + 10, args.steps)} | " + " | ".join(cells) + " |")
    ref = results.get("none")
    for m in methods:
        r = results[m]
        acc = r["accuracy"]
        ratio = f"{r['final_loss'] / ref['final_loss']:.3f}" if ref else "-"
        print(
            f"{LABELS[m]}: final loss {r['final_loss']:.4f} (x{ratio} of LoRA), accuracy on the float base "
            f"{acc['value']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] (n={acc['n']}), {r['seconds']:.0f} s training"
        )
        if "accuracy_on_trained_base" in r:
            acc = r["accuracy_on_trained_base"]
            print(
                f"{LABELS[m]}: accuracy on the {m} base it trained on {acc['value']:.3f} "
                f"[{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] (n={acc['n']})"
            )


if __name__ == "__main__":
    main()
