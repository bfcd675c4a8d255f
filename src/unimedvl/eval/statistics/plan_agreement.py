"""How closely a memory plan (e.g. int8) reproduces the full-precision model on a test set.

Both models run the batch evaluation's own protocol (:class:`~unimedvl.eval.runner.batch.BatchEvaluator`:
greedy answers for questions, the two-pass edit for restoration records) with the same seeds;
then the share of questions whose answers are identical and the mean PSNR of the edits of each
are compared. ``bench/memory_agreement.py`` runs it on a trained checkpoint; a slow test runs it
on a briefly trained one.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from unimedvl.eval.runner.batch import BatchEvaluator, EvalSettings, load_samples


def compare_plan(
    checkpoint: str | Path,
    data: str | Path,
    plan: dict[str, Any],
    settings: EvalSettings,
    *,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    max_edits: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Answer agreement and edit PSNR of ``plan`` (from_pretrained keyword arguments) vs the plain model.

    Returns ``questions``, ``agreement`` (share of identical answers), ``edits``, ``psnr_reference``,
    ``psnr_plan`` and ``psnr_difference`` (plan - reference, dB), and the disagreeing answers.
    """
    from unimedvl.inference.api import UniMedVL

    samples = load_samples(data, data_dir)
    questions = [s for s in samples if s.kind == "question"]
    edits = [s for s in samples if s.kind == "edit"][:max_edits]
    chosen = questions + edits
    lines: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, kwargs in (("reference", {}), ("plan", plan)):
            model = UniMedVL.from_pretrained(
                checkpoint,
                device=device,
                dtype=settings.dtype,
                prefer=settings.weights,
                config=settings.inference_config(checkpoint),
                **kwargs,
            )
            evaluator = BatchEvaluator(model, dataclasses.replace(settings, **_recorded(kwargs)), Path(scratch) / name)
            out = {}
            for k in range(0, len(chosen), batch_size):
                for line in evaluator.evaluate(chosen[k : k + batch_size]):
                    out[line["sample_id"]] = line
            lines[name] = out
            del model, evaluator
    ref, got = lines["reference"], lines["plan"]
    failed = [s.sample_id for s in chosen if ref[s.sample_id].get("error") or got[s.sample_id].get("error")]
    answered = [s.sample_id for s in questions if s.sample_id not in failed]
    same = [i for i in answered if ref[i]["answer"] == got[i]["answer"]]
    edited = [s.sample_id for s in edits if s.sample_id not in failed]

    def mean_psnr(side: dict) -> float:
        values = [side[i]["metrics"].get("psnr") for i in edited]
        values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        return sum(values) / len(values) if values else float("nan")

    psnr_ref, psnr_plan = mean_psnr(ref), mean_psnr(got)
    return {
        "questions": len(answered),
        "agreement": len(same) / len(answered) if answered else float("nan"),
        "edits": len(edited),
        "psnr_reference": psnr_ref,
        "psnr_plan": psnr_plan,
        "psnr_difference": psnr_plan - psnr_ref,
        "failed": failed,
        "disagreements": [(i, ref[i]["answer"], got[i]["answer"]) for i in answered if i not in same],
    }


def _recorded(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The plan's fields that EvalSettings records (components, quantize)."""
    return {k: kwargs[k] for k in ("components", "quantize") if kwargs.get(k) is not None}
