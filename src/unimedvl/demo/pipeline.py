"""`unimedvl demo`: the whole system on a laptop, on data that ships with the project.

Stages (each writes into ``OUT/<stage>/`` and a ``.done`` marker holding its settings, so an
interrupted demo rerun with the same settings reuses finished stages; different settings in the
same folder are refused instead of mixed):

1. ``data``: MedSynth train/test sets and the "real" evaluation set built from medical images
   that ship inside pydicom, nibabel, dipy and scikit-image (degraded -> original pairs);
2. ``tokenizer``: a small byte-level BPE trained on the MedSynth texts;
3. ``autoencoder``: a small FLUX-layout VAE trained on the MedSynth images (no FLUX weights here);
4. ``model_init``: a fresh unified model of the ``demo`` size with that VAE;
5. ``train``: the real trainer, understanding and generation together;
   It keeps three checkpoints (a third, two thirds and the end of training);
6. ``eval``: ``unimedvl eval`` of the three checkpoints on held-out MedSynth, and of the last one on
   the real set;
7. ``report``: what ``unimedvl stats`` writes (CSV, charts with the curves over training, HTML and
   Markdown; every metric next to its baseline with 95% intervals) plus ``demo_summary.json``, and
   whether each goal (:mod:`unimedvl.demo.goals`) was met, said plainly.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from unimedvl.errors import UserError
from unimedvl.run_lock import RunLock

MIN_FREE_BYTES = 1 << 30  # refuse to start with less than 1 GiB free
CURVE_POINTS = 3  # checkpoints kept and evaluated on MedSynth (the report's curves over training)


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo (defaults: about 10 minutes on 2 CPU cores)."""

    out: str = "demo_out"  # output folder
    seed: int = 0  # seeds data, tokenizer, autoencoder, model and training
    image_size: int = 64  # MedSynth image side in pixels
    n_train: int = 4400  # MedSynth training records (all tasks)
    n_test: int = 600  # MedSynth test records (all tasks)
    vqa_weight: float = 24.0  # MedSynth share of VQA records relative to each other task (1): lesions need many
    ae_steps: int = 250  # autoencoder optimiser steps
    train_steps: int = 1400  # unified-model optimiser steps
    lr: float = 1e-3  # unified-model learning rate
    # constant after the warm-up: presence is learnt late, and a cosine decay to lr / 10 slowed it
    # (step 1500, seed 0: 77.7% vs 75.2%, majority 56.2%; BENCHMARKS.md)
    lr_scheduler: str = "constant"
    ema: float = 0.99  # EMA decay per step (evaluation uses the EMA weights); short runs need a smaller one
    expected_num_tokens: int = 1024  # tokens per training pack
    freeze_vit: bool = True  # keep the randomly initialised ViT fixed: trained by the LLM's gradient it forgets lesions
    eval_per_task: int = 10  # MedSynth test records evaluated per non-VQA task (VQA: all, it is cheap)
    real_limit: int = 16  # real-set records evaluated (0: all)
    num_timesteps: int = 20  # denoising steps at evaluation (the reference uses 50)
    strength: float = 0.1  # edits at evaluation start from the input noised to t = strength (SDEdit; 1: pure noise)
    max_new_tokens: int = 24  # answer length at evaluation
    workers: int = 0  # processes rendering MedSynth (0: one per CPU core; the files are the same for any number)

    @classmethod
    def quick(cls, out: str, seed: int = 0) -> DemoConfig:
        """About two minutes on 2 cores (VQA-heavy, 150 small steps): used by the test suite."""
        return cls(
            out=out,
            seed=seed,
            n_train=500,
            n_test=200,
            vqa_weight=8.0,
            ae_steps=40,
            train_steps=150,
            expected_num_tokens=512,
            ema=0.95,
            eval_per_task=2,
            real_limit=4,
            num_timesteps=4,
            max_new_tokens=8,
        )

    def fingerprint(self) -> str:
        settings = {k: v for k, v in asdict(self).items() if k not in ("out", "workers")}  # neither changes a result
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Demo:
    """Runs the stages in order; ``run()`` returns the summary dict."""

    def __init__(self, cfg: DemoConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = log
        self.t0 = time.time()

    # -- stage bookkeeping ----------------------------------------------------------------------

    def _stage(self, name: str, fn: Callable[[Path], dict]) -> dict:
        folder = self.out / name
        marker = folder / ".done"
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("fingerprint") == self.cfg.fingerprint():
                self.log(f"[{self._clock()}] {name}: reusing the finished stage in {folder}")
                return done["result"]
            raise UserError(f"{folder} holds a demo stage made with other settings; use another --out or --fresh")
        if folder.exists():
            shutil.rmtree(folder)  # an interrupted stage: start it again cleanly
        folder.mkdir(parents=True)
        self.log(f"[{self._clock()}] {name}: starting")
        result = fn(folder)
        marker.write_text(json.dumps({"fingerprint": self.cfg.fingerprint(), "result": result}, indent=2))
        self.log(f"[{self._clock()}] {name}: done")
        return result

    def _clock(self) -> str:
        seconds = int(time.time() - self.t0)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    # -- stages ------------------------------------------------------------------------------

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.out).free
        if free < MIN_FREE_BYTES:
            raise UserError(f"{self.out}: only {free / 2**20:.0f} MiB free; the demo needs about 1 GiB")
        data = self._stage("data", self._data)
        tokenizer = self._stage("tokenizer", lambda f: self._tokenizer(f, data))
        ae = self._stage("autoencoder", lambda f: self._autoencoder(f, data))
        init = self._stage("model_init", lambda f: self._model_init(f, tokenizer, ae))
        trained = self._stage("train", lambda f: self._train(f, data, init))
        evaluated = self._stage("eval", lambda f: self._eval(f, data, trained))
        summary = self._stage("report", lambda f: self._report(f, data, evaluated, trained))
        self._print_summary(summary)
        return summary

    def _data(self, folder: Path) -> dict:
        from unimedvl.medsynth.generator import generate_medsynth
        from unimedvl.medsynth.real_set import build_real_eval_set

        c = self.cfg
        # VQA weighs more: its questions are the cheapest to evaluate, and the goals need enough of them.
        synth = generate_medsynth(
            folder / "medsynth",
            c.n_train,
            c.n_test,
            seed=c.seed,
            image_size=c.image_size,
            task_weights={"image_understanding": c.vqa_weight},
            workers=c.workers or os.cpu_count() or 1,
        )
        real = build_real_eval_set(folder / "real", image_size=c.image_size, seed=c.seed)
        self.log(
            f"  MedSynth: {sum(synth['counts']['train'].values())} train / "
            f"{sum(synth['counts']['test'].values())} test records; real set: {real['count']} records"
        )
        return {
            "mix": str(synth["mix"]),
            "dataset_info": str(synth["dataset_info"]),
            "train_jsonl": str(synth["jsonl"]["train"]),
            "test_jsonl": str(synth["jsonl"]["test"]),
            "medsynth_dir": str(folder / "medsynth"),
            "real_jsonl": str(real["jsonl"]),
            "real_dir": str(folder / "real"),
        }

    def _tokenizer(self, folder: Path, data: dict) -> dict:
        from unimedvl.checkpoint.create import BUILTIN_CORPUS
        from unimedvl.config import model_config
        from unimedvl.tokenizer import Tokenizer

        texts = [BUILTIN_CORPUS]
        for path in (data["train_jsonl"], data["test_jsonl"], data["real_jsonl"]):
            for line in Path(path).read_text().splitlines():
                record = json.loads(line)
                texts.extend(turn["value"].replace("<image>", " ") for turn in record.get("message", []))
        tok = Tokenizer.train_bpe(texts, vocab_size=model_config("demo").llm.vocab_size)
        tok.save(folder)
        self.log(f"  tokenizer: {len(tok)} tokens")
        return {"path": str(folder), "size": len(tok)}

    def _autoencoder(self, folder: Path, data: dict) -> dict:
        from unimedvl.config import model_config
        from unimedvl.train.autoencoder import AutoencoderTrainConfig, train_autoencoder

        # The layout of the `demo` named size (2x, z4, for latent_patch_size 8), trained on 32 px
        # crops with an extra squared-error term (BENCHMARKS.md: autoencoder layouts).
        model = model_config("demo")
        cfg = AutoencoderTrainConfig(
            data=(data["train_jsonl"],),
            out=str(folder / "ae.safetensors"),
            vae=model.vae,
            latent_patch_size=model.latent_patch_size,
            image_size=self.cfg.image_size,
            crop_size=min(32, self.cfg.image_size),
            batch_size=8,
            mse_weight=2.0,
            steps=self.cfg.ae_steps,
            seed=self.cfg.seed,
        )
        result = train_autoencoder(cfg, progress=True)
        report = result.report
        psnr = report.get("heldout_psnr", {})
        self.log(f"  autoencoder: held-out PSNR {psnr}")
        return {"weights": cfg.out, "report": str(cfg.report_path), "heldout_psnr": psnr}

    def _model_init(self, folder: Path, tokenizer: dict, ae: dict) -> dict:
        import torch

        from unimedvl.checkpoint.inference_config import evaluated_presets, for_model
        from unimedvl.checkpoint.release import save_model, trained_latent_patch_size, trained_vae_config
        from unimedvl.config import model_config
        from unimedvl.models.autoencoder import Autoencoder
        from unimedvl.models.unified import UnifiedModel
        from unimedvl.tokenizer import Tokenizer

        cfg = model_config("demo")
        cfg.vae = trained_vae_config(ae["weights"], ae["report"])
        cfg.latent_patch_size = trained_latent_patch_size(ae["weights"], ae["report"])
        torch.manual_seed(self.cfg.seed)
        model = UnifiedModel(cfg)
        model.vae.load_state_dict(Autoencoder.from_pretrained(ae["weights"], cfg.vae).state_dict())
        # The checkpoints carry the sampling settings their report is evaluated with (edit, generate, the app and
        # the API then reproduce it without flags); the trainer copies them from this starting checkpoint.
        inference = replace(for_model(cfg), guidance=evaluated_presets(self.cfg.strength, self.cfg.num_timesteps))
        save_model(model, folder, Tokenizer.from_dir(tokenizer["path"]), inference_config=inference)
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vae."))
        self.log(f"  model: demo size, {params / 1e6:.1f}M parameters (+ VAE)")
        return {"path": str(folder), "parameters": params}

    def _train(self, folder: Path, data: dict, init: dict) -> dict:
        from unimedvl.train.entry import main as train

        c = self.cfg
        # Three checkpoints for the curves over training: a third, two thirds and the end.
        # Rounded up, so that the last one is the final step (1400 // 3 would add a fourth at step 1398).
        save_every = max(-(-c.train_steps // CURVE_POINTS), 1)
        args = [
            "--model_path",
            init["path"],
            "--dataset_config_file",
            data["mix"],
            "--dataset_info_file",
            data["dataset_info"],
            "--checkpoint_dir",
            str(folder / "run"),
            "--total_steps",
            str(c.train_steps),
            "--lr",
            str(c.lr),
            "--warmup_steps",
            str(max(c.train_steps // 20, 1)),
            "--lr_scheduler",
            c.lr_scheduler,
            "--min_lr",
            str(c.lr / 10),
            "--ce_weight",
            "1.0",
            "--mse_weight",
            "1.0",
            "--expected_num_tokens",
            str(c.expected_num_tokens),
            "--max_num_tokens",
            str(c.expected_num_tokens * 2),
            "--max_num_tokens_per_sample",
            str(c.expected_num_tokens),
            "--ema",
            str(c.ema),
            "--save_every",
            str(save_every),
            "--log_every",
            str(max(c.train_steps // 20, 1)),
            "--auto_resume",
            "True",
            "--seed",
            str(c.seed),
            "--keep_last",
            "1",
            "--keep_every",
            str(save_every),
            "--text_cond_dropout_prob",
            "0.1",
            "--vit_cond_dropout_prob",
            "0.1",
            "--vae_cond_dropout_prob",
            "0.1",
            # A 9M-parameter model needs no activation memory savings, and its frozen VAE encodes each
            # image once: together they halve the CPU step (BENCHMARKS.md).
            "--gradient_checkpointing",
            "False",
            "--cache_latents",
            "True",
            "--freeze_vit",
            str(c.freeze_vit),
        ]
        if train(args) != 0:  # `unimedvl train ARGS`
            raise UserError("training failed (see the messages above)")
        from unimedvl.train.checkpointing import list_checkpoints

        kept = [path for _, path in list_checkpoints(folder / "run")]
        if not kept:
            raise UserError(f"training wrote no checkpoint under {folder / 'run'}")
        return {"checkpoint": str(kept[-1]), "checkpoints": [str(p) for p in kept], "log_dir": str(folder / "run")}

    def _eval(self, folder: Path, data: dict, trained: dict) -> dict:
        from unimedvl.eval.runner.job import evaluate
        from unimedvl.eval.runner.options import EvalOptions
        from unimedvl.medsynth.generator import TASKS, vit_sizes

        c = self.cfg
        # The image sizes the model was trained at (the MedSynth mix's transforms), not the
        # release's 512 / 378 px defaults: a 64 px model would otherwise see 8x upscaled images.
        vit = vit_sizes(c.image_size)
        common = dict(
            guidance={"num_timesteps": c.num_timesteps},
            max_new_tokens=c.max_new_tokens,
            seed=c.seed,
            strength=c.strength,
            sizes={
                "vae_min_size": c.image_size,
                "vae_max_size": c.image_size,
                "vit_min_size": vit["min_image_size"],
                "vit_max_size": vit["max_image_size"],
            },
        )
        runs = {"root": str(folder)}
        # OUT/eval/<model_id>/<split>/statistics.json: `unimedvl stats` names rows model, split.
        # Every VQA question (cheap); at most eval_per_task records of every other task.
        capped = [f"{task}={c.eval_per_task}" for task in TASKS if task != "image_understanding"]
        limits = {"medsynth": dict(limit_per_task=capped), "real": dict(limit=c.real_limit or None)}
        # Every kept checkpoint on MedSynth (the curves over training), the last one on the real set.
        models = {"medsynth": trained.get("checkpoints", [trained["checkpoint"]]), "real": [trained["checkpoint"]]}
        for name, jsonl, data_dir in (
            ("medsynth", data["test_jsonl"], data["medsynth_dir"]),
            ("real", data["real_jsonl"], data["real_dir"]),
        ):
            # `unimedvl eval --model ... --data JSONL --data-dir DIR --out FOLDER --split NAME` with those settings
            options = EvalOptions(
                models=[Path(p) for p in models[name]],
                data=jsonl,
                data_dir=data_dir,
                out=str(folder),
                split=name,
                **common,
                **limits[name],
            )
            try:
                evaluate(options)
            except UserError as err:  # said as `unimedvl eval` says it
                print(f"error: {err}", file=sys.stderr)
                raise UserError(f"evaluation on {name} failed (see the messages above)") from None
            runs[name] = name
        runs["settings"] = {"strength": c.strength, "num_timesteps": c.num_timesteps}
        return runs

    def _report(self, folder: Path, data: dict, evaluated: dict, trained: dict) -> dict:
        from unimedvl.demo.goals import check_goals, goals_html, restoration_verdicts
        from unimedvl.eval.report import writer as report
        from unimedvl.eval.statistics.stats_csv import load_statistics

        # What `unimedvl stats EVAL -o CSV --plot DIR --html FILE --train-log RUN` writes, with the goals first.
        entries, skipped = load_statistics([evaluated["root"]])
        if skipped or not entries:
            raise UserError(f"{evaluated['root']}: unusable evaluation statistics {skipped}")
        final = Path(trained["checkpoint"]).name
        runs = {e.split: e for e in entries if e.model_id == final}
        if "medsynth" not in runs:
            raise UserError(f"{evaluated['root']}: no statistics of {final} on medsynth")
        goals = check_goals(runs["medsynth"].stats)
        sampling = _sampling_note(evaluated.get("settings", {}))  # the demo's strength choice, stated
        # Beyond the goals: every image task of both splits against its baseline, in plain words.
        verdicts = [line for split in sorted(runs) for line in restoration_verdicts(split, runs[split].stats)]
        verdicts_html = "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in verdicts) + "</ul>"
        logs = {"demo": report.read_train_log(trained["log_dir"])}
        written = report.write_report(
            entries,
            folder / "summary.csv",
            folder / "plots",
            folder / "report.html",
            train_logs=logs,
            preface=[
                ("Goals", goals_html(goals)),
                ("Every image task against its baseline", verdicts_html),
                ("How the images were made", f"<p>{html.escape(sampling)}</p>"),
            ],
            out=lambda _: None,
        )
        # The printed summary: the results tables (the comparisons are in the report).
        lines = report.summary_text(entries, {}).splitlines() + [sampling]
        summary = {
            "checkpoint": trained["checkpoint"],
            "checkpoints": trained.get("checkpoints", []),
            "goals": goals,
            "lines": lines,
            "sampling": sampling,
            "restoration": verdicts,
            "results": {split: e.stats.get("estimates") for split, e in runs.items()},
            "report": {k: str(v) for k, v in written.items()},
        }
        (folder / "demo_summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _print_summary(self, summary: dict) -> None:
        self.log("")
        self.log("UniMedVL demo: results next to their baselines (mean [95% CI] n=items)")
        for line in summary["lines"]:
            self.log("  " + line)
        self.log("")
        self.log("Goals (final checkpoint, MedSynth test)")
        for goal in summary["goals"]:
            self.log(f"  [{'met' if goal['met'] else 'NOT MET'}] {goal['goal']}")
        self.log("")
        self.log("Every image task against its baseline (final checkpoint)")
        for line in summary.get("restoration", []):
            self.log("  " + line)
        self.log("")
        for name, path in summary["report"].items():
            self.log(f"  {name:<11} {path}")
        self.log(f"  model {summary['checkpoint']}")
        self.log(f"finished in {self._clock()}")


def _sampling_note(settings: dict) -> str:
    """One sentence on how the evaluated edits were sampled (the SDEdit strength and what it means)."""
    strength, steps = settings.get("strength", 1.0), settings.get("num_timesteps")
    if strength >= 1.0:
        return f"Edits sampled from pure noise (strength 1, {steps} timesteps)."
    return (
        f"Edits start from the latent of the degraded input noised to t = {strength:g} (SDEdit strength "
        f"{strength:g}: the last {strength:.0%} of a {steps}-point schedule), so the output keeps the anatomy of "
        f"the input; strength 1 would sample from pure noise."
    )


def run_demo(cfg: DemoConfig, fresh: bool = False) -> int:
    """Run the demo into ``cfg.out`` (one demo per folder; ``fresh``: empty the folder first); exit status 0."""
    with RunLock(cfg.out, "demo") as lock:  # before --fresh empties the folder another demo may be writing
        if fresh:
            for child in Path(cfg.out).iterdir():
                if child != lock.path:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        Demo(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(DemoConfig(out="demo_out", seed=0)))
