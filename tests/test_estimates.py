"""Baselines and intervals of statistics.json: hand-made result lines against hand computations, and
the coverage of the bootstrap intervals on synthetic data with a known mean."""

import numpy as np
import pytest
from PIL import Image

from unimedvl.eval.runner.batch import build_statistics
from unimedvl.eval.statistics.baselines import (
    MAJORITY_UPPER_BOUND,
    constant_report,
    image_baseline_name,
    image_baseline_prediction,
    question_baselines,
)
from unimedvl.metrics import text as T
from unimedvl.metrics.uncertainty import bootstrap_ci, bootstrap_ci_of_sums, paired_bootstrap_ci


def _question(i, gold, correct, qtype, kind="closed", **metrics):
    return {
        "sample_id": f"q{i}",
        "task_type": "vqa",
        "kind": "question",
        "answer": "a",
        "gold": gold,
        "question_type": qtype,
        "metrics": {"answer_kind": kind, "correct": correct, **metrics},
        "inference_time": 1.0,
        "error": None,
    }


def _edit(i, task, psnr, baseline_psnr, ssim=0.5, baseline_ssim=0.4, baseline="identity"):
    return {
        "sample_id": f"e{i}",
        "task_type": task,
        "kind": "edit",
        "baseline": baseline,
        "metrics": {"psnr": psnr, "ssim": ssim, "baseline_psnr": baseline_psnr, "baseline_ssim": baseline_ssim},
        "inference_time": 2.0,
        "error": None,
    }


def test_image_baseline_is_the_input_at_the_prediction_size():
    small = Image.fromarray(np.arange(16 * 16, dtype=np.uint8).reshape(16, 16), mode="L")
    same = image_baseline_prediction(small, (16, 16))
    assert same.mode == "RGB" and np.array_equal(np.asarray(same)[..., 0], np.asarray(small))
    up = image_baseline_prediction(small, (64, 48))
    assert up.size == (64, 48)
    assert np.array_equal(np.asarray(up), np.asarray(small.convert("RGB").resize((64, 48), Image.Resampling.BICUBIC)))
    assert image_baseline_name("super_resolution", "sr_x4") == "bicubic"
    assert image_baseline_name("restoration", "sr_x2") == "bicubic"
    assert image_baseline_name("denoising", "gaussian_noise") == "identity"
    assert image_baseline_name("stain_translation", None) == "identity"


def test_question_baselines_majority_per_type_and_chance():
    lines = [
        _question(0, "yes", True, "presence"),
        _question(1, "Yes.", False, "presence"),
        _question(2, "no", True, "presence"),
        _question(3, "ct", True, "modality"),
        _question(4, "mri", False, "modality"),
        _question(5, "mri", False, "modality"),
        _question(6, "left lung", False, "location", kind="open", recall=0.5),
        _question(7, "left lung", True, "location", kind="open", recall=1.0),
        _question(8, "right lobe", False, "location", kind="open", recall=0.0),
        _question(9, "B", True, None, kind="multiple_choice", n_options=4),
        {**_question(10, "A", False, None, kind="multiple_choice"), "benchmark": {"options": {"A": 1, "B": 2}}},
    ]
    base = question_baselines(lines)
    # presence: "yes" twice (normalised) of 3; modality: "mri" twice of 3; location: "left lung" 2 of 3
    assert [base[f"q{i}"]["correct"] for i in range(9)] == [1, 1, 0, 0, 1, 1, 1, 1, 0]
    assert (
        base["q0"]["answer"] == "yes" and base["q3"]["answer"] == "mri" and base["q6"]["name"] == MAJORITY_UPPER_BOUND
    )
    assert base["q8"]["recall"] == 0.0 and base["q6"]["recall"] == 1.0  # "left lung" recalls nothing of "right lobe"
    assert base["q9"] == {"name": "chance", "correct": 0.25} and base["q10"]["correct"] == 0.5

    stats = build_statistics(lines)
    est = stats["estimates"]
    overall = est["overall"]["accuracy"]
    assert overall["value"] == pytest.approx(5 / 11) and overall["n"] == 11
    # no training split: the test set's own majority, named an upper bound in every table
    assert overall["baseline"]["name"] == f"chance / {MAJORITY_UPPER_BOUND}"
    assert overall["baseline"]["value"] == pytest.approx((6 + 0.25 + 0.5) / 11)
    assert overall["minus_baseline"]["value"] == pytest.approx((5 - 6.75) / 11)
    presence = est["by_question_type"]["presence"]["accuracy"]
    assert presence["value"] == pytest.approx(2 / 3) and presence["baseline"]["value"] == pytest.approx(2 / 3)
    assert presence["baseline"]["name"] == MAJORITY_UPPER_BOUND and presence["n"] == 3
    recall = est["by_question_type"]["location"]["open_recall"]
    assert recall["value"] == pytest.approx(0.5) and recall["baseline"]["value"] == pytest.approx(2 / 3)
    # The older vqa block agrees with the new one where they overlap.
    assert stats["vqa"]["by_question_type"]["presence"]["majority_baseline"] == pytest.approx(2 / 3)


def test_image_estimates_pair_the_model_with_its_baseline_and_skip_infinite_scores():
    lines = [
        _edit(0, "denoising", 24.0, 22.0),
        _edit(1, "denoising", 26.0, 23.0),
        _edit(2, "denoising", 21.0, "inf", baseline_ssim=1.0),
        _edit(3, "super_resolution", 30.0, 31.0, baseline="bicubic"),
        {"sample_id": "bad", "task_type": "denoising", "kind": "edit", "metrics": {}, "error": "boom"},
    ]
    est = build_statistics(lines)["estimates"]
    den = est["by_task_type"]["denoising"]["psnr"]
    assert den["value"] == pytest.approx(71 / 3) and den["n"] == 3
    assert den["baseline"] == {
        **den["baseline"],
        "name": "identity",
        "value": pytest.approx(22.5),
        "n": 2,
        "n_infinite": 1,
    }
    assert den["minus_baseline"]["value"] == pytest.approx(2.5) and den["minus_baseline"]["n"] == 2
    low, high = den["ci95"]
    assert 21.0 <= low <= den["value"] <= high <= 26.0
    sr = est["by_task_type"]["super_resolution"]["psnr"]
    assert sr["baseline"]["name"] == "bicubic" and sr["minus_baseline"]["value"] == pytest.approx(-1.0)
    assert est["overall"]["psnr"]["baseline"]["name"] == "bicubic / identity"
    assert est["overall"]["ssim"]["baseline"]["value"] == pytest.approx((0.4 * 3 + 1.0) / 4)


def test_report_estimates_equal_the_corpus_metrics_and_the_constant_baseline():
    golds = ["heart normal size", "heart normal size", "a mass in the lung", "no lesion seen"]
    answers = ["the heart is normal", "lung mass", "a mass in the lung", "lesion"]
    lines = [
        {
            "sample_id": f"r{i}",
            "task_type": "report_generation",
            "kind": "report",
            "answer": a,
            "gold": g,
            "metrics": {},
            "inference_time": 1.0,
            "error": None,
        }
        for i, (a, g) in enumerate(zip(answers, golds))
    ]
    stats = build_statistics(lines)
    est = stats["estimates"]["by_task_type"]["report_generation"]
    for key, value in T.report_metrics(answers, golds).items():
        assert est[key]["value"] == pytest.approx(value, abs=1e-12), key
        assert stats["report_generation"][key] == pytest.approx(value, abs=1e-12)
    assert constant_report(golds) == "heart normal size"
    constant = T.report_metrics(["heart normal size"] * 4, golds)
    for key, value in constant.items():
        assert est[key]["baseline"]["value"] == pytest.approx(value, abs=1e-12), key
        assert est[key]["baseline"]["name"] == "constant"
    low, high = est["bleu_1"]["ci95"]
    assert 0.0 <= low <= est["bleu_1"]["value"] <= high <= 1.0


def _coverage(draw, truth, interval, trials=200):
    rng = np.random.default_rng(12345)
    hits = 0
    for trial in range(trials):
        low, high = interval(draw(rng), trial)
        hits += low <= truth <= high
    return hits


def test_bootstrap_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    # 200 intervals from fresh samples each: a correct 95% interval holds the true mean ~190 times (binomial sd 3;
    # the percentile bootstrap runs slightly short at n = 60). Too wide (std instead of standard error) gives 200,
    # too narrow far fewer.
    def ci(values, trial):
        return bootstrap_ci(values, n_resamples=1000, seed=trial)

    normal = _coverage(lambda rng: rng.normal(25.0, 3.0, size=60), 25.0, ci)
    skewed = _coverage(lambda rng: rng.exponential(2.0, size=60), 2.0, ci)
    binary = _coverage(lambda rng: (rng.random(60) < 0.7).astype(float), 0.7, ci)
    for name, hits in (("normal", normal), ("skewed", skewed), ("binary", binary)):
        assert 178 <= hits <= 198, (name, hits)


def test_paired_and_corpus_intervals_cover_the_true_value():
    # Paired: two correlated systems; the true difference of their means is 0.5.
    def paired(rng):
        shared = rng.normal(0.0, 5.0, size=60)
        return shared + 0.5 + rng.normal(0, 1, 60), shared + rng.normal(0, 1, 60)

    hits = _coverage(paired, 0.5, lambda ab, t: paired_bootstrap_ci(*ab, n_resamples=1000, seed=t))
    assert 178 <= hits <= 198, hits

    # A ratio of sums (the shape of corpus BLEU's precisions): matches / totals, true ratio 0.3.
    def ratio_rows(rng):
        totals = rng.integers(5, 30, size=80).astype(float)
        return np.stack([rng.binomial(totals.astype(int), 0.3), totals], axis=1)

    def ratio_ci(rows, trial):
        return bootstrap_ci_of_sums(rows, lambda s: s[:, 0] / s[:, 1], n_resamples=1000, seed=trial)

    hits = _coverage(ratio_rows, 0.3, ratio_ci)
    assert 178 <= hits <= 198, hits


def test_paired_intervals_are_narrower_than_unpaired_for_correlated_systems():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.0, 5.0, size=100)
    a, b = shared + 0.5 + rng.normal(0, 0.5, 100), shared + rng.normal(0, 0.5, 100)
    low, high = paired_bootstrap_ci(a, b, seed=0)
    (a_low, a_high), (b_low, b_high) = bootstrap_ci(a, seed=0), bootstrap_ci(b, seed=0)
    assert 0.0 < low < 0.5 < high  # the paired interval sees the difference ...
    assert a_low < b_high and b_low < a_high  # ... that the two unpaired intervals, overlapping, do not
