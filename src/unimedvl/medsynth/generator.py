"""MedSynth: a procedurally generated medical benchmark with known ground truth.

Every image comes from a :class:`~unimedvl.medsynth.images.Scene` (modality, anatomy, lesions
with known region, size and count), so every answer, report, restoration target and counterfactual
is exact. Generation is deterministic: record ``i`` of task ``t`` in split ``s`` draws from
``numpy.random.default_rng([seed, s, t, i])``, so the same seed gives byte-identical PNGs and JSONL,
and the content of one task does not depend on which other tasks were asked for.

Layout written by :func:`generate_medsynth` (``out_dir`` is the ``data_dir`` of every dataset;
image paths in records are relative to it)::

    out_dir/images/<split>/<task>/<sample_id>[_in|_out].png
    out_dir/train.jsonl, test.jsonl            every record of the split
    out_dir/<split>_understanding.jsonl        vlm_sft: image_understanding + report_generation
    out_dir/<split>_editing.jsonl              MedicalImageEditingIterableDataset: denoising, deblurring,
                                               super_resolution, motion_correction, stain_translation
    out_dir/<split>_counterfactual.jsonl       CounterfactualMedicalIterableDataset_ver1
    out_dir/<split>_t2i.jsonl                  t2i: text_to_image
    out_dir/dataset_info.yaml                  tier 2: dataset type -> dataset name -> {data_dir, jsonl_path,
                                               num_total_samples}; ABSOLUTE paths, resolved at write time
                                               (move the folder -> regenerate or edit them)
    out_dir/mix.yaml                           tier 3: the training mix over the train datasets

Record format: spec/medical.md section 1 (``main_task_type``, ``degrade_type`` for restoration,
``sample_id``, ``input_img`` / ``output_img`` always present (possibly empty), ``message``). Human-turn
``<image>`` placeholders take the input images in order, gpt-turn ones the output images. Extra keys
carry the ground truth: ``modality``, ``lesions`` ([{region, center [y, x] px, radius px, size}]),
``question_type`` and ``answer`` (VQA), ``degrade_params`` (restoration).

``n_train`` / ``n_test`` are totals per split, shared across the requested tasks evenly or in
proportion to ``task_weights`` (earlier tasks in :data:`TASKS` order take the remainder). The
combined ``{split}.jsonl`` interleaves the tasks round-robin, so any prefix of it (``unimedvl eval
--limit N``) covers every task in proportion.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from unimedvl.errors import ConfigError
from unimedvl.medsynth import degradations as degrade
from unimedvl.medsynth import images as si
from unimedvl.medsynth.writers import prepare_output_dir, save_png, write_jsonl, write_yaml

# task name (= main_task_type) -> dataset type that trains on it
TASKS: dict[str, str] = {
    "image_understanding": "vlm_sft",
    "report_generation": "vlm_sft",
    "denoising": "MedicalImageEditingIterableDataset",
    "deblurring": "MedicalImageEditingIterableDataset",
    "super_resolution": "MedicalImageEditingIterableDataset",
    "motion_correction": "MedicalImageEditingIterableDataset",
    "stain_translation": "MedicalImageEditingIterableDataset",
    "counterfactual_generation": "CounterfactualMedicalIterableDataset_ver1",
    "text_to_image": "t2i",
}
# dataset type -> short name used in file and dataset names
DATASET_TYPES: dict[str, str] = {
    "vlm_sft": "understanding",
    "MedicalImageEditingIterableDataset": "editing",
    "CounterfactualMedicalIterableDataset_ver1": "counterfactual",
    "t2i": "t2i",
}
# short names accepted by --tasks / tasks=
TASK_ALIASES = {
    "vqa": "image_understanding",
    "report": "report_generation",
    "sr": "super_resolution",
    "motion": "motion_correction",
    "stain": "stain_translation",
    "counterfactual": "counterfactual_generation",
    "t2i": "text_to_image",
}
SPLITS = ("train", "test")
QUESTION_TYPES = ("modality", "presence", "location", "count")

IMAGE = "<image>"
_COUNT_P = [0.4, 0.3, 0.15, 0.15]  # lesions per image: 0..3 (60% of images have a lesion)
_WORDS = ["no", "one", "two", "three"]
_NAME = {"ct": "CT", "mri": "MRI", "x-ray": "chest X-ray", "histology": "histology", "fundus": "fundus"}
_REPORT_HEAD = {
    "ct": "CT image",
    "mri": "MRI image",
    "x-ray": "Chest X-ray image",
    "histology": "H&E histology image",
    "fundus": "Fundus photograph",
}
_CAPTION_HEAD = {
    "ct": "An axial chest CT image",
    "mri": "An axial T1-weighted brain MRI image",
    "x-ray": "A frontal chest X-ray",
    "histology": "An H&E-stained histology image",
    "fundus": "A colour fundus photograph",
}
_CLEARED = {
    "ct": "the lung parenchyma now appears normal",
    "mri": "the brain now shows normal signal",
    "x-ray": "the lung fields are now clear",
    "histology": "the tissue now shows normal nuclear density",
    "fundus": "the retina is now free of exudates",
}
_QUESTIONS = {
    "modality": ["What imaging modality is this?", "Which imaging modality was used for this image?"],
    "presence": ["Is there a lesion in this image?", "Does this image show any lesion?"],
    "location": ["Where is the lesion located?", "In which region is the lesion?"],
    "count": ["How many lesions are there?", "How many lesions can be seen in this image?"],
}
_INSTRUCTIONS = {
    "denoising": ["Remove the noise from this {m} image.", "Denoise this {m} image."],
    "deblurring": ["Remove the blur from this {m} image.", "Sharpen this blurred {m} image."],
    "super_resolution": [
        "Increase the resolution of this {m} image {k}x.",
        "Restore this {k}x low-resolution {m} image.",
    ],
    "motion_correction": [
        "Correct the motion artifacts in this {m} image.",
        "Remove the motion ghosting from this {m} image.",
    ],
}


def _level(value: float, mild: float, moderate: float, larger_is_worse: bool = True) -> str:
    """'mild' / 'moderate' / 'severe' from two thresholds."""
    if not larger_is_worse:
        value, mild, moderate = -value, -mild, -moderate
    return "mild" if value < mild else "moderate" if value < moderate else "severe"


def _where(region: str) -> str:
    return f"in the {region} quadrant" if region in si.QUADRANTS else f"in the {region}"


def findings(modality: str, lesions: Sequence[si.Lesion], noun: str = "lesion") -> str:
    """The lesions as a phrase, e.g. 'two lesions in the left lung and one lesion in the right lung'."""
    counts = Counter(les.region for les in lesions)
    return " and ".join(
        f"{_WORDS[counts[r]]} {noun}{'s' if counts[r] > 1 else ''} {_where(r)}"
        for r in si.REGIONS[modality]
        if counts[r]
    )


def report_text(modality: str, lesions: Sequence[si.Lesion]) -> str:
    """The short ground-truth report: 'CT image. Two lesions in the left lung.'"""
    body = findings(modality, lesions)
    return f"{_REPORT_HEAD[modality]}. {body[0].upper() + body[1:] if body else 'No lesion seen'}."


def caption_text(modality: str, lesions: Sequence[si.Lesion]) -> str:
    """Text-to-image caption: 'An axial chest CT image with one lesion in the left lung.'"""
    return f"{_CAPTION_HEAD[modality]} with {findings(modality, lesions) or 'no lesion'}."


def removal_text(modality: str, lesions: Sequence[si.Lesion]) -> str:
    """Counterfactual explanation: 'The lesion in the left lung was removed; ...'"""
    counts = Counter(les.region for les in lesions)
    parts = [
        f"the lesion {_where(r)}" if counts[r] == 1 else f"the {_WORDS[counts[r]]} lesions {_where(r)}"
        for r in si.REGIONS[modality]
        if counts[r]
    ]
    verb = "was" if len(lesions) == 1 else "were"
    text = " and ".join(parts)
    return f"{text[0].upper() + text[1:]} {verb} removed; {_CLEARED[modality]}."


# ---------------------------------------------------------------------------------------------
# Record makers: (rng, index, size) -> (record body, [(suffix, input image)], [(suffix, output image)]).


def _pick(rng, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _n_lesions(rng, p=_COUNT_P) -> int:
    return int(rng.choice(len(p), p=p))


def _modality(index: int, stride: int = 1, choices: Sequence[str] = si.MODALITIES) -> str:
    return choices[(index // stride) % len(choices)]


def _gt(scene: si.Scene) -> dict:
    return {"modality": scene.modality, "lesions": [les.to_json() for les in scene.lesions]}


def _make_vqa(rng, i, size):
    qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
    modality = _modality(i, stride=len(QUESTION_TYPES))  # 4 and 5 are coprime: every (type, modality) pair
    n = 1 if qtype == "location" else _n_lesions(rng)
    scene = si.make_scene(modality, size, rng, n)
    n = len(scene.lesions)
    answer = {
        "modality": modality,
        "presence": "yes" if n else "no",
        "location": scene.lesions[0].region if n else "",
        "count": str(n),
    }[qtype]
    msg = [{"from": "human", "value": f"{IMAGE}\n{_pick(rng, _QUESTIONS[qtype])}"}, {"from": "gpt", "value": answer}]
    rec = {"message": msg, **_gt(scene), "question_type": qtype, "answer": answer}
    return rec, [("", si.render(scene))], []


def _make_report(rng, i, size):
    scene = si.make_scene(_modality(i), size, rng, _n_lesions(rng))
    text = report_text(scene.modality, scene.lesions)
    msg = [{"from": "human", "value": f"{IMAGE}\nWrite a short report for this image."}, {"from": "gpt", "value": text}]
    return {"message": msg, **_gt(scene), "answer": text}, [("", si.render(scene))], []


def _degrade(task: str, clean: np.ndarray, rng, i: int, size: int):
    """(degraded image, degrade_type, params, assessment phrase) for one restoration task."""
    scale = size / 64.0
    if task == "denoising":
        if i % 2 == 0:
            sigma = round(float(rng.uniform(0.03, 0.12)), 3)
            return (
                degrade.gaussian_noise(clean, sigma, rng),
                "gaussian_noise",
                {"sigma": sigma},
                f"{_level(sigma, 0.05, 0.09)} Gaussian noise",
            )
        peak = round(float(rng.uniform(15.0, 200.0)), 1)
        return (
            degrade.poisson_noise(clean, peak, rng),
            "poisson_noise",
            {"peak": peak},
            f"{_level(peak, 120.0, 50.0, larger_is_worse=False)} Poisson (photon) noise",
        )
    if task == "deblurring":
        sigma = round(float(rng.uniform(0.8, 2.2)) * scale, 2)
        return (
            degrade.gaussian_blur(clean, sigma),
            "gaussian_blur",
            {"sigma_px": sigma},
            f"{_level(sigma / scale, 1.2, 1.7)} blur",
        )
    if task == "super_resolution":
        factor = 2 if i % 2 == 0 else 4
        return degrade.down_up(clean, factor), f"sr_x{factor}", {"factor": factor}, f"{factor}x lower resolution"
    if task == "motion_correction":
        frac, shift = round(float(rng.uniform(0.15, 0.4)), 3), round(float(rng.uniform(1.0, 4.0)) * scale, 2)
        return (
            degrade.motion_ghosting(clean, rng, frac, shift),
            "motion_ghosting",
            {"fraction": frac, "shift_px": shift},
            f"{_level(shift / scale, 1.8, 3.0)} motion ghosting",
        )
    raise AssertionError(task)


def restoration_pair(
    task: str, clean: np.ndarray, modality: str, rng: np.random.Generator, index: int, size: int
) -> tuple[np.ndarray, dict]:
    """Degrade ``clean`` for a restoration ``task`` and build the record body around the pair.

    Returns (degraded image, {degrade_type, message, degrade_params}); the message asks for the
    restoration and the gpt turn assesses the input first ("Assessment: ... <image>").
    """
    degraded, dtype, params, phrase = _degrade(task, clean, rng, index, size)
    m = _NAME[modality]
    instruction = _pick(rng, _INSTRUCTIONS[task]).format(m=m, k=params.get("factor", ""))
    msg = [
        {"from": "human", "value": f"{IMAGE}\n{instruction}"},
        {"from": "gpt", "value": f"Assessment: {m} image with {phrase}. {IMAGE}"},
    ]
    return degraded, {"degrade_type": dtype, "message": msg, "degrade_params": params}


def _restore_maker(task: str) -> Callable:
    modalities = ("mri", "ct") if task == "motion_correction" else si.MODALITIES

    def make(rng, i, size):
        scene = si.make_scene(_modality(i, choices=modalities), size, rng, _n_lesions(rng))
        clean = si.render(scene)
        degraded, body = restoration_pair(task, clean, scene.modality, rng, i, size)
        params = body.pop("degrade_params")
        return {**body, **_gt(scene), "degrade_params": params}, [("_in", degraded)], [("_out", clean)]

    return make


def _make_stain(rng, i, size):
    scene = si.make_scene("histology", size, rng, int(rng.choice(3, p=[0.3, 0.4, 0.3])))
    tumour = findings("histology", scene.lesions, noun="tumour cluster") or "no tumour cluster"
    msg = [
        {
            "from": "human",
            "value": f"{IMAGE}\nTranslate this H&E-stained image into the corresponding IHC (DAB) stain.",
        },
        {"from": "gpt", "value": f"Assessment: H&E-stained tissue with {tumour}. {IMAGE}"},
    ]
    rec = {"degrade_type": "he_to_ihc", "message": msg, **_gt(scene)}
    he, ihc = si.render_stain_pair(scene)
    return rec, [("_in", he)], [("_out", ihc)]


def _make_counterfactual(rng, i, size):
    scene = si.make_scene(_modality(i), size, rng, 1 + int(rng.choice(3, p=[0.5, 0.3, 0.2])))
    what = "lesion" if len(scene.lesions) == 1 else "lesions"
    msg = [
        {
            "from": "human",
            "value": f"{IMAGE}\nGenerate a counterfactual version of this {_NAME[scene.modality]} "
            f"image with the {what} removed, then explain the change.",
        },
        {"from": "gpt", "value": f"{IMAGE}\n{removal_text(scene.modality, scene.lesions)}"},
    ]
    rec = {"message": msg, **_gt(scene)}
    return rec, [("_in", si.render(scene))], [("_out", si.render(scene.without_lesions()))]


def _make_t2i(rng, i, size):
    scene = si.make_scene(_modality(i), size, rng, _n_lesions(rng))
    msg = [{"from": "human", "value": caption_text(scene.modality, scene.lesions)}, {"from": "gpt", "value": IMAGE}]
    return {"message": msg, **_gt(scene)}, [], [("", si.render(scene))]


_MAKERS: dict[str, Callable] = {
    "image_understanding": _make_vqa,
    "report_generation": _make_report,
    **{t: _restore_maker(t) for t in ("denoising", "deblurring", "super_resolution", "motion_correction")},
    "stain_translation": _make_stain,
    "counterfactual_generation": _make_counterfactual,
    "text_to_image": _make_t2i,
}


# ---------------------------------------------------------------------------------------------
# Records and the benchmark.


def make_record(task: str, split: str, index: int, seed: int, size: int, out_dir: Path) -> dict:
    """Build record ``index`` of ``task`` in ``split``, write its PNGs under ``out_dir``, return it."""
    rng = np.random.default_rng([seed, SPLITS.index(split), list(TASKS).index(task), index])
    body, inputs, outputs = _MAKERS[task](rng, index, size)
    sample_id = f"medsynth_{split}_{task}_{index:05d}"
    lists = {}
    for key, images in (("input_img", inputs), ("output_img", outputs)):
        lists[key] = []
        for suffix, img in images:
            rel = f"images/{split}/{task}/{sample_id}{suffix}.png"
            save_png(out_dir / rel, img)
            lists[key].append({"path": rel, "height": int(img.shape[0]), "width": int(img.shape[1])})
    record = {"main_task_type": task}
    if "degrade_type" in body:
        record["degrade_type"] = body.pop("degrade_type")
    record.update(sample_id=sample_id, **lists, message=body.pop("message"), **body)
    return record


def _task_weights(chosen: Sequence[str], task_weights: Mapping[str, float] | None) -> list[float]:
    """One weight per chosen task (1 unless named); ConfigError for unknown names or bad values."""
    weights = {}
    for name, value in (task_weights or {}).items():
        task = TASK_ALIASES.get(name, name)
        if task not in chosen:
            raise ConfigError(f"task weight for {name!r}: not one of the chosen tasks {chosen}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"task weight for {name!r} must be a positive number, got {value!r}")
        weights[task] = float(value)
    return [weights.get(task, 1.0) for task in chosen]


def _split_counts(n: int, tasks: Sequence[str], weights: Sequence[float] | None = None) -> dict[str, int]:
    """``n`` records shared in proportion to ``weights`` (largest remainders; ties to earlier tasks)."""
    weights = list(weights) if weights is not None else [1.0] * len(tasks)
    shares = [n * w / sum(weights) for w in weights]
    counts = [int(s) for s in shares]
    by_remainder = sorted(range(len(tasks)), key=lambda k: (-(shares[k] - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    return dict(zip(tasks, counts))


def _round_robin(groups: list[list[dict]]) -> list[dict]:
    """One record of each group in turn (shorter groups drop out), so every prefix mixes them."""
    return [group[i] for i in range(max(map(len, groups), default=0)) for group in groups if i < len(group)]


def vit_sizes(size: int) -> dict:
    """ViT transform sizes for ``size``-pixel images: the multiples of 14 around it."""
    lo, hi = max(14 * (size // 14), 14), 14 * -(-size // 14)
    return {"image_stride": 14, "max_image_size": hi, "min_image_size": lo, "max_pixels": hi * hi}


MIN_IMAGE_SIZE = 64  # below this, three separated lesions no longer fit inside one lung or hemisphere


def check_image_size(image_size) -> None:
    """ConfigError unless ``image_size`` is a multiple of 16 (the VAE stride) in [64, 1024]."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % 16:
        raise ConfigError(f"image_size must be a multiple of 16 (the VAE stride), got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= 1024:
        raise ConfigError(
            f"image_size must be at least {MIN_IMAGE_SIZE} (room for three lesions per region) and at "
            f"most 1024, got {image_size}"
        )


def _check(n_train, n_test, image_size, tasks) -> list[str]:
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{name} must be a non-negative integer, got {n!r}")
    check_image_size(image_size)
    chosen = list(TASKS) if not tasks else [TASK_ALIASES.get(t, t) for t in tasks]
    unknown = [t for t in chosen if t not in TASKS]
    if unknown:
        raise ConfigError(
            f"unknown MedSynth task(s) {unknown}; choose from {list(TASKS)} (short names: {', '.join(TASK_ALIASES)})"
        )
    return [t for t in TASKS if t in chosen]  # canonical order keeps the output independent of argument order


def _make_records(jobs: list[tuple[str, str, int]], seed: int, size: int, out: Path, workers: int) -> list[dict]:
    """``make_record`` for every (task, split, index), in order; ``workers`` > 1 renders in that many
    processes. Every record draws from its own generator, so the output is the same either way."""
    if workers <= 1 or len(jobs) < 2 * workers:
        return [make_record(task, split, i, seed, size, out) for task, split, i in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunk = -(-len(jobs) // (4 * workers))  # a few chunks per worker: even load, little overhead
    parts = [jobs[k : k + chunk] for k in range(0, len(jobs), chunk)]
    # fork: workers inherit the imported modules (spawn would import torch-free code again, slower)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        done = pool.map(_make_chunk, parts, [seed] * len(parts), [size] * len(parts), [out] * len(parts))
        return [record for part in done for record in part]


def _make_chunk(jobs: list[tuple[str, str, int]], seed: int, size: int, out: Path) -> list[dict]:
    return [make_record(task, split, i, seed, size, out) for task, split, i in jobs]


def generate_medsynth(
    out_dir: str | os.PathLike,
    n_train: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 64,
    tasks: Sequence[str] | None = None,
    overwrite: bool = False,
    task_weights: Mapping[str, float] | None = None,
    vit_image_size: int | None = None,
    workers: int = 1,
) -> dict:
    """Write MedSynth to ``out_dir`` (layout in the module docstring) and return a summary.

    ``tasks``: names from :data:`TASKS` or :data:`TASK_ALIASES` (default: all). ``n_train`` /
    ``n_test``: records per split, shared across the tasks evenly or in proportion to
    ``task_weights`` ({task or short name: weight}; unnamed tasks weigh 1). ``vit_image_size``: the
    side the mix resizes images to for the ViT (default ``image_size``; larger gives the understanding
    path finer 14 px patches of small lesions). ``overwrite``: replace a previous
    MedSynth in ``out_dir`` (a non-empty folder is refused otherwise). ``workers``: processes that
    render the records (the files are byte-identical for any number). Returns ``{"out_dir", "seed",
    "image_size", "tasks", "counts": {split: {task: n}}, "jsonl": {split: path}, "datasets":
    {dataset name: jsonl path}, "dataset_info", "mix"}`` (paths absolute).
    """
    chosen = _check(n_train, n_test, image_size, tasks)
    weights = _task_weights(chosen, task_weights)
    if vit_image_size is not None and (
        isinstance(vit_image_size, bool) or not isinstance(vit_image_size, int) or not 14 <= vit_image_size <= 1024
    ):
        raise ConfigError(
            f"vit_image_size must be an integer in [14, 1024] (one 14 px patch at least), got {vit_image_size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out_dir).resolve()
    prepare_output_dir(out, overwrite)
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "image_size": image_size,
        "tasks": chosen,
        "counts": {},
        "jsonl": {},
        "datasets": {},
    }
    info: dict = {}
    for split, n in (("train", n_train), ("test", n_test)):
        counts = _split_counts(n, chosen, weights)
        summary["counts"][split] = counts
        by_type: dict[str, list[dict]] = {}
        jobs = [(task, split, i) for task in chosen for i in range(counts[task])]
        made = iter(_make_records(jobs, seed, image_size, out, workers))
        by_task = {task: [next(made) for _ in range(counts[task])] for task in chosen}
        for task, records in by_task.items():
            if records:  # a task with no records this split gets no (empty) dataset
                by_type.setdefault(TASKS[task], []).extend(records)
        write_jsonl(out / f"{split}.jsonl", _round_robin(list(by_task.values())))
        summary["jsonl"][split] = str(out / f"{split}.jsonl")
        for dtype, records in by_type.items():
            name = f"medsynth_{DATASET_TYPES[dtype]}_{split}"
            path = out / f"{split}_{DATASET_TYPES[dtype]}.jsonl"
            write_jsonl(path, records)
            info.setdefault(dtype, {})[name] = {
                "data_dir": str(out),
                "jsonl_path": str(path),
                "num_total_samples": len(records),
            }
            summary["datasets"][name] = str(path)
    write_yaml(
        out / "dataset_info.yaml",
        info,
        "MedSynth dataset info (tier 2): dataset type -> dataset name -> {data_dir, jsonl_path,\n"
        "num_total_samples}. Paths are ABSOLUTE, resolved when this file was written; if the folder\n"
        "moves, regenerate it (unimedvl synth) or edit the paths. Image paths inside the JSONL are\n"
        "relative to data_dir.",
    )
    write_yaml(
        out / "mix.yaml",
        _mix(info, image_size, vit_image_size or image_size, seed),
        "MedSynth training mix (tier 3), keyed by dataset type; names refer to dataset_info.yaml.\n"
        "weight = number of train records, so sampling follows the data's proportions.",
    )
    summary["dataset_info"], summary["mix"] = str(out / "dataset_info.yaml"), str(out / "mix.yaml")
    return summary


def _mix(info: dict, size: int, vit_size: int, seed: int) -> dict:
    mix = {}
    for dtype, datasets in info.items():
        names = [name for name in datasets if name.endswith("_train")]
        if not names:
            continue
        mix[dtype] = {
            "dataset_names": names,
            "image_transform_args": {"image_stride": 16, "max_image_size": size, "min_image_size": size},
            "vit_image_transform_args": vit_sizes(vit_size),
            "weight": {name: datasets[name]["num_total_samples"] for name in names},
            "num_used_data": {name: [0, 0] for name in names},
            "is_mandatory": False,
            "shuffle_lines": True,
            "shuffle_seed": seed,
        }
    return mix
