"""The baseline every evaluation metric is shown next to, computed from the same test items.

``identity`` (restoration, translation, counterfactual edits)
    the degraded input itself, brought to the prediction's size (bicubic) and scored by the same
    code as the prediction: a model that returns its input. Computed per sample during
    evaluation (:func:`image_baseline_prediction`), so native-mode scores go through the ground
    truth's window like the prediction's.
``bicubic`` (super-resolution: a task or degrade type naming super-resolution / ``sr_xN``)
    the same operation, which for a low-resolution input is bicubic upsampling to the prediction's
    size (for MedSynth, whose inputs are already upsampled, it equals identity).
``majority`` (VQA, closed and open questions)
    always answering the most common gold answer of the question's type (``question_type``, and
    closed / open kept apart) in the training split (:mod:`unimedvl.eval.statistics.train_majority`): what a
    model that never looks at the image would learn. Without a training split (or for a type it
    lacks) the answer is chosen on the test items themselves, the best such a guesser can do on this
    set, and the baseline is named ``majority (test-set answers: an upper bound)`` in every table.
``chance`` (multiple choice)
    1 / number of options, the expected accuracy of a uniform guess.
``constant`` (report generation)
    the same report for every image: the most common reference report of the set (ties: the first).

Text-to-image has no baseline (its images are not scored against a reference).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from unimedvl.imaging.transforms import resize
from unimedvl.metrics.text import normalize_answer, open_recall

MAJORITY = "majority"  # the majority answer of the training split
MAJORITY_UPPER_BOUND = "majority (test-set answers: an upper bound)"  # chosen on the test set's own answers

_SUPER_RESOLUTION = re.compile(r"super[_ -]?resolution|^sr(_|$)|^sr_?x\d+$|upsampl|downsampl")


def image_baseline_name(task_type: str | None, degrade_type: str | None) -> str:
    """``bicubic`` for a super-resolution sample, else ``identity``."""
    for name in (task_type, degrade_type):
        if isinstance(name, str) and _SUPER_RESOLUTION.search(name.lower()):
            return "bicubic"
    return "identity"


def image_baseline_prediction(input_image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The baseline's "prediction": the input as RGB at ``size`` (width, height), resized bicubically if needed."""
    return resize(input_image.convert("RGB"), size)


# ---------------------------------------------------------------------------------------------
# Questions and reports (over a whole run's result lines).


def _question_group(line: Mapping[str, Any]) -> tuple[str, str]:
    return str(line.get("question_type") or "all"), str((line.get("metrics") or {}).get("answer_kind"))


def _n_options(line: Mapping[str, Any]) -> int | None:
    metrics = line.get("metrics") or {}
    if isinstance(metrics.get("n_options"), int) and metrics["n_options"] > 0:
        return metrics["n_options"]
    options = (line.get("benchmark") or {}).get("options")
    return len(options) if isinstance(options, (dict, list)) and options else None


def question_baselines(
    lines: Sequence[Mapping[str, Any]], train: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, dict[str, Any]]:
    """sample_id -> the baseline's scores of that question: ``{name, answer, correct[, recall]}``.

    ``correct`` is 0/1 for the majority answer and 1/options for chance; scored lines only (those
    with ``metrics.correct``), a multiple-choice line without a known option count gets none.
    ``train``: {question_type: {kind: answer}} from the training split (name :data:`MAJORITY`); a
    group it lacks takes the test set's majority (name :data:`MAJORITY_UPPER_BOUND`).
    """
    scored = [l for l in lines if "correct" in (l.get("metrics") or {}) and l.get("gold") is not None]
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for line in scored:
        if line["metrics"].get("answer_kind") in ("closed", "open"):
            groups.setdefault(_question_group(line), []).append(line)
    out: dict[str, dict[str, Any]] = {}
    for (qtype, kind), group in groups.items():
        golds = [normalize_answer(str(l["gold"])) for l in group]
        majority = ((train or {}).get(qtype) or {}).get(kind)
        name = MAJORITY if majority is not None else MAJORITY_UPPER_BOUND
        if majority is None:
            majority = Counter(golds).most_common(1)[0][0]  # ties: the first met in file order
        for line, gold in zip(group, golds):
            entry: dict[str, Any] = {"name": name, "answer": majority, "correct": float(gold == majority)}
            if kind == "open":
                entry["recall"] = open_recall(majority, str(line["gold"]))
            out[str(line["sample_id"])] = entry
    for line in scored:
        if line["metrics"].get("answer_kind") == "multiple_choice":
            n = _n_options(line)
            if n:
                out[str(line["sample_id"])] = {"name": "chance", "correct": 1.0 / n}
    return out


def constant_report(golds: Sequence[str]) -> str | None:
    """The constant baseline's report: the most common reference (ties: the first); None for none."""
    texts = [str(g) for g in golds if g]
    return Counter(texts).most_common(1)[0][0] if texts else None


__all__ = [
    "MAJORITY",
    "MAJORITY_UPPER_BOUND",
    "constant_report",
    "image_baseline_name",
    "image_baseline_prediction",
    "question_baselines",
]
