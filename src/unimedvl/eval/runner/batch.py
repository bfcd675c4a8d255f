"""Batch evaluation of one checkpoint on a JSONL test set: samples, protocols, scores.

The runner (``unimedvl eval``, :mod:`unimedvl.eval.runner.job`) owns the run directory, resume
and distribution; this module turns records into result lines, :mod:`unimedvl.eval.statistics.run_statistics`
result lines into ``statistics.json``.

Each record of the JSONL (spec medical.md section 1) becomes a :class:`Sample` of one kind:

``edit``
    input image(s) and an output image: the two-pass protocol of spec medical.md section 5.
    (1) understanding: the input images through the ViT only, then the instruction (the first
    human turn's text), greedy, up to ``max_new_tokens`` -> ``understanding_text``;
    (2) editing: the images (VAE + ViT), then ``instruction + "\\n\\n" + understanding_text``
    -> the predicted image, with the run's guidance settings. Scored with PSNR/SSIM against the
    first output image (the others are ignored).
``t2i``
    an output image but no input image: the prompt (human text) -> an image with the same
    guidance settings. Saved, not scored: a generated image has no pixel-wise correspondence
    to its reference, so PSNR/SSIM would measure nothing (use ``metrics.compute_fid`` on the
    saved images).
``question``
    no output image: greedy answer to the first human turn. Scored when a gold answer exists
    (the record's ``answer`` key, MedSynth style, else the first gpt turn): multiple choice when
    the record has ``options`` (or ``choices``), otherwise VQA (closed questions: yes/no or an
    ``answer_type`` of closed -> accuracy; open -> exact match and token recall).
``report``
    ``main_task_type == "report_generation"``: answered like a question; BLEU/ROUGE-L/METEOR
    (exact)/CIDEr-D are computed over all reports together in the statistics.
``invalid``
    a line that is not a usable record (malformed JSON, a gpt ``<image>`` without an output
    image, ...): not run, reported with its ``error``.

Image metrics: ``reference`` (uint8 RGB, ground truth resized bicubically to the prediction,
comparable with published numbers), ``native`` (at the ground truth's size and on its own
intensity scale: the prediction is mapped back through the window the ground truth was
displayed with, e.g. to HU for a CT DICOM) or ``both`` (reference as ``psnr``/``ssim``, native
as ``psnr_native``/``ssim_native``).

Every sample gets its own seed from the run seed and its sample id, so its result does not
depend on the batch, the rank or the order it ran in.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import traceback
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unimedvl import metrics as M
from unimedvl.benchmarks.scoring import is_benchmark_record, line_fields, score_question
from unimedvl.data.records import IMAGE_TOKEN, Record, confinement_problem, parse_line
from unimedvl.errors import ConfigError, DataError, DiskFullError, UserError
from unimedvl.eval.statistics.baselines import image_baseline_name, image_baseline_prediction
from unimedvl.eval.statistics.item_scores import IMAGE_METRICS
from unimedvl.eval.statistics.run_statistics import REPORT_TASK, build_statistics
from unimedvl.fileio import atomic_path, disk_full_reported
from unimedvl.guidance import RESTORATION, GuidanceConfig, check_strength
from unimedvl.imaging.medical_io import LoadedImage, load_array
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS

METRIC_MODES = ("reference", "native", "both")
KINDS = ("edit", "t2i", "question", "report", "invalid")


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides a run's results (recorded in run_info.json; a resume must match)."""

    dtype: str = "fp32"  # weights dtype (bf16 on GPU by default)
    weights: str = "ema"  # ema: ema.safetensors (model.safetensors when absent); model: the raw weights
    vae_min_size: int = 512  # VAE resize rule, short edge at least this: 512 quality, 256 speed
    vae_max_size: int = 1024  # VAE resize rule, long edge at most this
    vit_min_size: int = 378  # ViT transform, short edge at least this
    vit_max_size: int = 980  # ViT transform, long edge at most this
    vae_max_pixels: int | None = 1_806_336  # VAE resize rule, at most this many pixels (None: no cap)
    vit_max_pixels: int | None = 1_806_336  # ViT transform, at most this many pixels (the release's, both)
    max_new_tokens: int = 800  # understanding pass / answer length limit
    seed: int = 0  # run seed; each sample's seed derives from it and the sample id
    metric_mode: str = "reference"  # reference | native | both
    strength: float = 1.0  # edits: SDEdit start (1: pure noise, the reference; < 1: the noised input image)
    components: str = "all"  # all | understanding (VQA / report sets; edit records then fail one by one)
    quantize: str = "none"  # none | int8 | nf4: weight-only quantisation (changes the numbers a little)
    guidance: GuidanceConfig = field(default_factory=lambda: RESTORATION)  # spec medical.md section 5 settings
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # images over this many pixels fail their sample (header check)
    confine_data_dir: bool = False  # images outside the data folder fail their sample (else a warning)

    def __post_init__(self) -> None:
        if self.metric_mode not in METRIC_MODES:
            raise ConfigError(f"metric_mode={self.metric_mode!r}; choose one of {', '.join(METRIC_MODES)}")
        if self.weights not in ("ema", "model"):
            raise ConfigError(f"weights={self.weights!r}; choose 'ema' or 'model'")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        for name in ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive number of pixels")
        check_strength(self.strength)
        if self.guidance.strength != self.strength:  # one strength, the field's (run_info.json holds it once)
            object.__setattr__(self, "guidance", replace(self.guidance, strength=self.strength))

    def inference_config(self, model_path):
        """The checkpoint's InferenceConfig with this run's sizes (its guidance goes with each request)."""
        from unimedvl.checkpoint.inference_config import InferenceConfig

        base = InferenceConfig.load(model_path)
        vae = replace(
            base.vae_transform,
            min_image_size=self.vae_min_size,
            max_image_size=self.vae_max_size,
            max_pixels=self.vae_max_pixels,
        )
        vit = replace(
            base.vit_transform,
            min_image_size=self.vit_min_size,
            max_image_size=self.vit_max_size,
            max_pixels=self.vit_max_pixels,
        )
        return replace(base, vae_transform=vae, vit_transform=vit)

    def to_json(self) -> dict:
        """Flat JSON (guidance fields at the top level, as run_info.json files have always held them)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "guidance"}
        return {**out, **self.guidance.to_json()}


# ---------------------------------------------------------------------------------------------
# Samples.


@dataclass
class Sample:
    """One line of the test JSONL, ready to evaluate (or why it cannot be)."""

    index: int  # position among the file's non-blank lines (results are sorted by it)
    sample_id: str  # the record's id (unique within the file), key of resume
    stem: str  # file-name-safe unique form of sample_id, for images/<stem>_{input,GT,pred}.png
    task_type: str
    kind: str  # one of KINDS
    record: Record | None = None
    degrade_type: str | None = None
    error: str | None = None  # kind == "invalid": what is wrong with the line
    source: str = ""  # path:line


def _raw_fields(raw: bytes) -> dict:
    """sample_id / main_task_type / degrade_type of a line that did not parse as a record, if readable."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _kind(record: Record) -> str:
    if record.output_images:
        return "edit" if record.input_images else "t2i"
    return "report" if record.task_type == REPORT_TASK else "question"


def load_samples(
    path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, confine_data_dir: bool | None = False
) -> list[Sample]:
    """Every non-blank line of the JSONL as a Sample; a bad line becomes an ``invalid`` one (no exception).

    Duplicate sample ids get ``#<line>`` appended (resume needs unique keys), with a warning. A
    record with an image outside ``data_dir`` (default: the file's folder) becomes ``invalid`` with
    ``confine_data_dir``; otherwise one warning counts them (None: not checked, for the records our
    benchmark readers wrote, whose images stay where the benchmark keeps them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: test JSONL not found; pass --data with an existing file")
    samples: list[Sample] = []
    seen: set[str] = set()
    outside: list[str] = []  # sources of records reaching outside the data folder
    folder = os.fspath(data_dir) if data_dir is not None else os.fspath(path.parent)
    with path.open("rb") as handle:
        lines = [(n, raw) for n, raw in enumerate(handle, start=1) if raw.strip()]
    for index, (number, raw) in enumerate(lines):
        source = f"{path}:{number}"
        try:
            record = parse_line(raw, path, number, data_dir)
        except DataError as err:
            obj = _raw_fields(raw)
            sid = obj.get("sample_id", obj.get("id"))
            sid = str(sid) if isinstance(sid, (str, int)) and not isinstance(sid, bool) and sid != "" else None
            task = obj.get("main_task_type")
            degrade = obj.get("degrade_type")
            sample = Sample(
                index,
                sid or f"{path.name}:{number}",
                "",
                task if isinstance(task, str) and task else "unknown",
                "invalid",
                degrade_type=degrade if isinstance(degrade, str) else None,
                error=str(err),
                source=source,
            )
        else:
            sample = Sample(
                index, record.sample_id, "", record.task_type, _kind(record), record, record.degrade_type, source=source
            )
            if isinstance(record.extra.get("unusable"), str):  # a benchmark question the reader could not use
                sample.kind, sample.record, sample.error = "invalid", None, record.extra["unusable"]
            elif confine_data_dir is not None and (problem := confinement_problem(record, folder)) is not None:
                outside.append(source)
                if confine_data_dir:
                    sample.kind, sample.record = "invalid", None
                    sample.error = f"{problem}; move it inside, or evaluate without --confine-data-dir"
        if sample.sample_id in seen:
            new_id = f"{sample.sample_id}#{number}"
            print(
                f"warning: {source}: sample_id {sample.sample_id!r} repeats an earlier line; evaluated as {new_id!r}",
                file=sys.stderr,
            )
            sample.sample_id = new_id
        seen.add(sample.sample_id)
        samples.append(sample)
    if outside and not confine_data_dir:
        print(
            f"warning: {len(outside)} record(s) of {path} name images outside the data folder {folder} (first: "
            f"{outside[0]}); --confine-data-dir fails such samples",
            file=sys.stderr,
        )
    stems: set[str] = set()
    for s in samples:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", s.sample_id).strip("._")[:120] or "sample"
        if stem in stems:
            stem = f"{stem}_{s.index}"
        stems.add(stem)
        s.stem = stem
    return samples


def sample_seed(run_seed: int, sample_id: str) -> int:
    """The sample's noise seed: independent of rank, batch and order."""
    return (run_seed * 1_000_003 + zlib.crc32(sample_id.encode("utf-8"))) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------
# Scoring.


def _gold(record: Record) -> str | None:
    answer = record.extra.get("answer")
    if isinstance(answer, (str, int, float)) and not isinstance(answer, bool):
        return str(answer)
    for turn in record.turns:
        if turn.role == "gpt":
            return turn.text
    return None


def _options(record: Record) -> Mapping[str, str] | Sequence[str] | None:
    options = record.extra.get("options", record.extra.get("choices"))
    return options if isinstance(options, (dict, list)) and options else None


def score_answer(record: Record, prediction: str) -> dict[str, Any]:
    """Per-sample understanding score: {gold, question_type, answer_kind, correct[, recall]}."""
    gold = _gold(record)
    qtype = record.extra.get("question_type")
    out: dict[str, Any] = {"gold": gold, "question_type": qtype if isinstance(qtype, str) else None}
    if is_benchmark_record(record):  # a standard benchmark's question: its published protocol
        answer = record.extra.get("answer")  # the published answer only (None on unanswered TEST splits)
        gold = None if answer is None else str(answer)
        return {**out, "gold": gold, **score_question(record, prediction, gold)}
    if gold is None or record.task_type == REPORT_TASK:
        return out
    options = _options(record)
    if options is not None:
        letters = (
            {str(k).strip().upper(): str(v) for k, v in options.items()}
            if isinstance(options, dict)
            else {chr(ord("A") + i): str(v) for i, v in enumerate(options)}
        )  # as metrics.extract_choice reads them
        letter = gold.strip().strip("()").upper()
        if letter not in letters:  # the gold given as option text: find its letter
            match = [k for k, v in letters.items() if M.normalize_answer(v) == M.normalize_answer(gold)]
            letter = match[0] if len(match) == 1 else letter
        out.update(
            answer_kind="multiple_choice",
            correct=M.extract_choice(prediction, options) == letter,
            n_options=len(letters),
        )  # the chance baseline is 1 / n_options
        return out
    declared = record.extra.get("answer_type")
    declared = declared.lower() if isinstance(declared, str) and declared.lower() in ("closed", "open") else None
    scores = M.vqa_scores([prediction], [gold], [declared])
    if scores["closed_count"]:
        out.update(answer_kind="closed", correct=bool(scores["closed_accuracy"]))
    else:
        out.update(answer_kind="open", correct=bool(scores["open_exact_match"]), recall=scores["open_recall"])
    return out


def native_prediction(pred: Image.Image, gt: LoadedImage) -> tuple[np.ndarray, float]:
    """The prediction on the ground truth's intensity scale, and that scale's data range.

    The ground truth was shown to the model through its window (low -> 0, high -> 255, maybe
    inverted); the prediction goes back through the same window, grey when the truth is grey.
    """
    arr = np.asarray(pred.convert("RGB"), dtype=np.float64)
    if not gt.is_color:
        arr = arr.mean(axis=-1)
    if gt.invert:
        arr = 255.0 - arr
    low, high = gt.window
    if not high > low:
        return arr, 255.0
    return low + (high - low) * arr / 255.0, float(high - low)


def image_scores(pred: Image.Image, gt: LoadedImage, gt_display: Image.Image, mode: str) -> dict[str, Any]:
    """PSNR/SSIM of a prediction against its ground truth in the run's metric mode(s)."""
    out: dict[str, Any] = {"pred_size": [pred.width, pred.height], "gt_size": [gt_display.width, gt_display.height]}
    out["size_mismatch"] = pred.size != gt_display.size  # handled: one side is resized (see module doc)
    if mode in ("reference", "both"):
        ref = M.paired_image_metrics(pred, gt_display, mode="reference")
        out.update(psnr=ref["psnr"], ssim=ref["ssim"])
    if mode in ("native", "both"):
        values, data_range = native_prediction(pred, gt)
        nat = M.paired_image_metrics(values, gt.pixels.astype(np.float64), mode="native", data_range=data_range)
        prefix = "" if mode == "native" else "_native"
        out.update({f"psnr{prefix}": nat["psnr"], f"ssim{prefix}": nat["ssim"], "native_data_range": data_range})
    return out


def _json_number(value: Any) -> Any:
    """JSON has no infinity: an infinite PSNR (identical images) is written as the string "inf", NaN as null."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# The evaluator.


@dataclass
class _Work:
    sample: Sample
    seed: int
    inputs: list[Image.Image] = field(default_factory=list)
    instruction: str = ""
    gt: LoadedImage | None = None
    gt_display: Image.Image | None = None
    line: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    und_time: float = 0.0
    gen_time: float = 0.0


def _error_text(err: BaseException) -> str:
    return str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"


class BatchEvaluator:
    """Runs the protocols of the module docstring on a loaded ``UniMedVL`` and writes the images."""

    def __init__(self, model, settings: EvalSettings, run_dir: str | os.PathLike[str], rank: int = 0):
        self.model = model
        self.settings = settings
        self.guidance = settings.guidance
        self.image_dir = Path(run_dir) / "images"
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self.rank = rank

    def evaluate(self, samples: Sequence[Sample]) -> list[dict[str, Any]]:
        """One result line per sample, in order; a failure is a line with ``error``, never an exception.

        The samples are served together: all understanding requests in one batch, then all image
        requests in one; a batch that fails is retried one sample at a time so that only the
        sample at fault fails. ``inference_time`` is the sample's share of its batches' time.
        """
        works = [self._prepare(s) for s in samples]
        live = [w for w in works if w.error is None]
        und = [w for w in live if w.sample.kind in ("edit", "question", "report")]
        self._serve(und, self._understand_request, self._take_text, "und_time")
        gen = [w for w in live if w.error is None and w.sample.kind in ("edit", "t2i")]
        self._serve(gen, self._image_request, self._take_image, "gen_time")
        return [self._finish(w) for w in works]

    # -- steps -----------------------------------------------------------------------------

    def _prepare(self, sample: Sample) -> _Work:
        work = _Work(sample, sample_seed(self.settings.seed, sample.sample_id))
        work.line = {
            "sample_id": sample.sample_id,
            "index": sample.index,
            "task_type": sample.task_type,
            "degrade_type": sample.degrade_type,
            "kind": sample.kind,
            "seed": work.seed,
        }
        if sample.kind == "invalid":
            work.error = sample.error
            return work
        record = sample.record
        if is_benchmark_record(record):
            work.line["benchmark"] = line_fields(record)
        human = next((t for t in record.turns if t.role == "human"), None)
        work.instruction = human.text if human is not None else ""
        work.line["instruction"] = work.instruction
        if sample.kind in ("question", "report"):  # not copied: the report shows them from where they are
            work.line["input_paths"] = [ref.path for ref in record.input_images]
        try:
            if not work.instruction.strip():
                raise DataError("the record has no human text (instruction or question) to give the model")
            limit = self.settings.max_image_pixels
            work.inputs = [load_array(ref.path, max_image_pixels=limit).to_pil() for ref in record.input_images]
            if record.output_images:
                ref = record.output_images[0]
                try:
                    work.gt = load_array(ref.path, max_image_pixels=limit)
                except UserError as err:
                    raise DataError(f"output image: {err}") from None
                work.gt_display = work.gt.to_pil()
        except Exception as err:  # noqa: BLE001 - one bad sample must not end the run (nor every rerun)
            self._fail(work, err)
        return work

    def _understand_request(self, work: _Work):
        from unimedvl.inference.inferencer import Request

        return Request(
            [*work.inputs, work.instruction],
            "understand",
            max_new_tokens=self.settings.max_new_tokens,
            temperature=0.0,
            seed=work.seed,
        )

    def _image_request(self, work: _Work):
        from unimedvl.inference.inferencer import Request

        if work.sample.kind == "t2i":  # at the reference's size after the VAE rule, as an edit would be
            width, height = self.model.inferencer.vae_transform.target_size(*work.gt_display.size)
            return Request(
                [work.instruction], "generate", guidance=self.guidance, seed=work.seed, height=height, width=width
            )
        text = work.instruction + "\n\n" + work.line["understanding_text"]
        return Request(
            [*work.inputs, text], "edit", guidance=self.guidance, seed=work.seed, strength=self.settings.strength
        )

    def _take_text(self, work: _Work, result) -> None:
        key = "understanding_text" if work.sample.kind == "edit" else "answer"
        work.line[key] = result.text

    def _take_image(self, work: _Work, result) -> None:
        work.line["_pred"] = result.image

    def _serve(self, works: list[_Work], make, take, timer: str) -> None:
        if not works:
            return
        requests = []
        for work in works:
            try:
                requests.append(make(work))
            except (UserError, OSError, ValueError) as err:
                work.error = _error_text(err)
                requests.append(None)
        ready = [(w, r) for w, r in zip(works, requests) if r is not None]
        if not ready:
            return
        start = time.perf_counter()
        try:
            results = self.model.run([r for _, r in ready])
        except Exception as err:  # noqa: BLE001 - isolate the sample at fault below
            if len(ready) == 1:
                self._fail(ready[0][0], err)
                return
            for work, request in ready:
                self._serve_one(work, request, take, timer)
            return
        share = (time.perf_counter() - start) / len(ready)
        for (work, _), result in zip(ready, results):
            take(work, result)
            setattr(work, timer, share)

    def _serve_one(self, work: _Work, request, take, timer: str) -> None:
        start = time.perf_counter()
        try:
            (result,) = self.model.run([request])
        except Exception as err:  # noqa: BLE001 - recorded on the sample, the run goes on
            self._fail(work, err)
            return
        take(work, result)
        setattr(work, timer, time.perf_counter() - start)

    def _fail(self, work: _Work, err: BaseException) -> None:
        if isinstance(err, DiskFullError):
            raise err
        work.error = _error_text(err)
        if not isinstance(err, UserError):  # an unexpected failure: keep the traceback for the user
            print(f"warning: sample {work.sample.sample_id} failed:\n{traceback.format_exc()}", file=sys.stderr)

    def _finish(self, work: _Work) -> dict[str, Any]:
        line = work.line
        pred = line.pop("_pred", None)
        if work.error is None:
            try:
                line["metrics"] = self._score(work, pred)
            except DiskFullError:
                raise  # not the sample's fault: the run stops, the sample is redone after a rerun
            except (UserError, OSError, ValueError) as err:
                work.error = _error_text(err)
        if work.error is not None:
            line.setdefault("metrics", {})
        line["inference_time"] = work.und_time + work.gen_time if work.error is None else None
        line["understanding_time"] = work.und_time if work.sample.kind in ("edit", "question", "report") else None
        line["generation_time"] = work.gen_time if work.sample.kind in ("edit", "t2i") else None
        line["metric_mode"] = self.settings.metric_mode if work.sample.kind == "edit" else None
        line["rank"] = self.rank
        line["error"] = work.error
        line["metrics"] = {k: _json_number(v) for k, v in line["metrics"].items()}
        return line

    def _score(self, work: _Work, pred: Image.Image | None) -> dict[str, Any]:
        kind = work.sample.kind
        if kind in ("question", "report"):
            scored = score_answer(work.sample.record, work.line["answer"])
            work.line["gold"] = scored.pop("gold")
            work.line["question_type"] = scored.pop("question_type")
            return scored
        work.line["gold"] = _gpt_text(work.sample.record)
        images = {}
        stem = work.sample.stem
        if work.inputs:
            images["input"] = self._save(work.inputs[-1], f"{stem}_input.png")
        images["GT"] = self._save(work.gt_display, f"{stem}_GT.png")
        images["pred"] = self._save(pred, f"{stem}_pred.png")
        work.line["images"] = images
        if len(work.sample.record.output_images) > 1:
            work.line["note"] = f"{len(work.sample.record.output_images)} output images; the first is scored"
        if kind == "t2i":
            return {"pred_size": [pred.width, pred.height]}
        scores = image_scores(pred, work.gt, work.gt_display, self.settings.metric_mode)
        if work.inputs:  # the identity / bicubic baseline, scored by the same code on the same item
            work.line["baseline"] = image_baseline_name(work.sample.task_type, work.sample.degrade_type)
            baseline = image_scores(
                image_baseline_prediction(work.inputs[-1], pred.size),
                work.gt,
                work.gt_display,
                self.settings.metric_mode,
            )
            scores.update({f"baseline_{k}": v for k, v in baseline.items() if k in IMAGE_METRICS})
        return scores

    def _save(self, image: Image.Image, name: str) -> str:
        with disk_full_reported(
            "writing images", self.image_dir, "the results written so far are intact; free space and rerun to continue"
        ):
            with atomic_path(self.image_dir / name, fsync=False) as tmp:  # no half image under the final name
                image.save(tmp, format="PNG")
        return f"images/{name}"


def _gpt_text(record: Record) -> str | None:
    texts = [t.text for t in record.turns if t.role == "gpt" and t.value.replace(IMAGE_TOKEN, "").strip()]
    return "\n".join(texts) if texts else None


__all__ = [
    "METRIC_MODES",
    "BatchEvaluator",
    "EvalSettings",
    "Sample",
    "build_statistics",
    "image_scores",
    "load_samples",
    "native_prediction",
    "sample_seed",
    "score_answer",
]
