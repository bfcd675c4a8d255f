"""Benchmark scoring: the published protocols on hand-made predictions, VLMEvalKit's choice matching, bootstrap CIs."""

import numpy as np
import pytest

from unimedvl.benchmarks.scoring import benchmark_statistics, line_fields
from unimedvl.data.records import parse_record
from unimedvl.eval.runner.batch import build_statistics, score_answer
from unimedvl.metrics.choice_matching import choose, match_choice
from unimedvl.metrics.uncertainty import bootstrap_ci, paired_bootstrap_ci

OPTIONS = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}


def _record(answer, answer_type, options=None, category="cat", **extra):
    msg = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "a training target, not the gold"}]
    obj = {
        "main_task_type": "image_understanding",
        "message": msg,
        "benchmark": "vqa-rad",
        "split": "test",
        "question_id": "1",
        "question": "Q?",
        "answer": answer,
        "answer_type": answer_type,
        "options": options,
        "groups": {"category": category},
        "prompt_template": "short_answer",
        "paper_column": "VQA-RAD",
        **extra,
    }
    return parse_record(obj)


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("The answer is B.", "B"),
        ("B. MRI", "B"),
        ("**C**", "C"),
        ("b", None),  # letters count only in upper case ...
        ("mri", "B"),  # ... but option text matches case-insensitively
        ("A or B", None),
        ("It is an MRI, not a CT", None),  # two letters / two option texts: no answer
        ("Cannot determine the answer", "Z"),
        ("Z", "Z"),
        ("A mass is seen", "A"),  # VLMEvalKit's default path reads the article as the letter A
        ("Ultrasound image", "D"),
    ],
)
def test_vlmevalkit_choice_matching(prediction, letter):
    assert match_choice(prediction, OPTIONS) == letter


def test_choice_judge_is_asked_only_when_the_rules_fail():
    calls = []

    def judge(question, options, prediction):
        calls.append(prediction)
        return "c"

    assert choose("B", OPTIONS, "Q?", judge) == ("B", "letter") and calls == []
    assert choose("I think it's a radiograph", OPTIONS, "Q?", judge) == ("C", "judge") and len(calls) == 1
    assert choose("I think it's a radiograph", OPTIONS) == ("Z", "none")


def test_scorer_on_hand_made_predictions_with_known_accuracy_and_recall():
    cases = [  # (gold, answer_type, prediction, correct, recall)
        ("Yes", "closed", "yeah, there is", True, None),  # yes/no synonym, case
        ("no", "closed", "False.", True, None),
        ("no", "closed", "nodule present", False, None),  # not a substring test: "no" is not "nodule"
        ("Left", "closed", "left.", True, None),  # a closed answer that is not yes/no
        ("the liver", "open", "Liver", True, 1.0),  # articles and case dropped
        ("left lower lobe", "open", "the left lobe", False, 2 / 3),
        ("pleural effusion", "open", "effusion", False, 0.5),
    ]
    lines = []
    for i, (gold, kind, prediction, correct, recall) in enumerate(cases):
        scored = score_answer(_record(gold, kind, category="pos" if i < 4 else "organ"), prediction)
        assert scored["correct"] is correct and scored.get("recall") == (pytest.approx(recall) if recall else None)
        lines.append(
            {
                "sample_id": str(i),
                "task_type": "image_understanding",
                "kind": "question",
                "answer": prediction,
                "gold": scored.pop("gold"),
                "question_type": scored.pop("question_type"),
                "metrics": scored,
                "benchmark": line_fields(_record(gold, kind, category="pos" if i < 4 else "organ")),
                "inference_time": 0.1,
                "error": None,
            }
        )
    lines.append(
        {
            "sample_id": "bad",
            "task_type": "image_understanding",
            "kind": "invalid",
            "metrics": {},
            "error": "x.parquet:3: image missing",
            "inference_time": None,
        }
    )
    block = build_statistics(lines)["benchmark"]
    overall = block["overall"]
    assert overall["accuracy"]["value"] == pytest.approx(4 / 7) and overall["accuracy"]["n"] == 7
    assert overall["closed_accuracy"]["value"] == pytest.approx(3 / 4)
    assert overall["open_recall"]["value"] == pytest.approx((1 + 2 / 3 + 0.5) / 3)
    assert overall["open_exact_match"]["value"] == pytest.approx(1 / 3)
    assert block["n_failed"] == 1 and block["n_questions"] == 8 and block["prompt_template"]["name"] == "short_answer"
    assert "single word or phrase" in block["prompt_template"]["text"]
    by_cat = block["by_group"]["category"]
    assert by_cat["pos"]["accuracy"]["value"] == pytest.approx(3 / 4) and by_cat["organ"]["accuracy"]["n"] == 3
    low, high = overall["accuracy"]["ci95"]
    assert low <= 4 / 7 <= high and low < high


def test_multiple_choice_statistics_and_judge_rescoring():
    preds = ["B", "the answer is (A)", "mri", "no idea", "D"]
    lines = []
    for i, pred in enumerate(preds):
        record = _record("B", "multiple_choice", OPTIONS, prompt_template="multiple_choice")
        scored = score_answer(record, pred)
        lines.append(
            {
                "sample_id": str(i),
                "kind": "question",
                "answer": pred,
                "gold": scored.pop("gold"),
                "metrics": scored,
                "benchmark": line_fields(record),
                "error": None,
            }
        )
    block = benchmark_statistics(lines)
    assert block["overall"]["multiple_choice_accuracy"]["value"] == pytest.approx(2 / 5)
    assert block["multiple_choice_matched_by"] == {"letter": 3, "none": 1, "text": 1}
    judged = benchmark_statistics(lines, judge=lambda q, o, p: "B")
    assert judged["overall"]["accuracy"]["value"] == pytest.approx(3 / 5) and judged["judge"] == "<lambda>"


def test_unanswered_questions_are_read_not_scored():
    scored = score_answer(_record(None, "multiple_choice", OPTIONS), "B")
    assert scored["gold"] is None and "correct" not in scored


def test_bootstrap_ci_contains_the_estimate_narrows_with_n_and_is_deterministic():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 200, 2000):
        values = (rng.random(n) < 0.6).astype(float)
        low, high = bootstrap_ci(values, seed=3)
        assert low <= values.mean() <= high
        widths.append(high - low)
        assert bootstrap_ci(values, seed=3) == (low, high)
    assert widths[0] > widths[1] > widths[2]
    recall = rng.random(500)  # non-binary scores go through the resampling path
    low, high = bootstrap_ci(recall, n_resamples=500, seed=0)
    assert low <= recall.mean() <= high and high - low < 0.1
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_paired_bootstrap_difference_of_two_systems():
    rng = np.random.default_rng(2)
    a = (rng.random(400) < 0.7).astype(float)
    b = a.copy()
    b[:40] = 0.0  # system b loses 40 questions system a had (some already wrong)
    diff = a.mean() - b.mean()
    low, high = paired_bootstrap_ci(a, b, seed=0)
    assert 0 < low <= diff <= high
    # Pairing matters: the unpaired intervals of the two systems overlap, the paired one excludes 0.
    assert bootstrap_ci(a)[0] < bootstrap_ci(b)[1]
    with pytest.raises(ValueError, match="pair them"):
        paired_bootstrap_ci(a, b[:10])


def test_intervals_at_0_and_100_percent_are_not_zero_width():
    from unimedvl.metrics.uncertainty import mean_estimate, wilson_interval

    low, high = mean_estimate([1.0] * 20)["ci95"]
    assert high == 1.0 and low == pytest.approx(0.8389, abs=1e-3)  # Wilson, 20/20
    assert mean_estimate([0.0] * 20)["ci95"] == pytest.approx([0.0, 1 - 0.8389], abs=1e-3)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-3)


def test_a_bootstrap_clustered_by_image_is_wider_when_an_image_decides_its_questions():
    from unimedvl.metrics.uncertainty import clustered_mean_estimate, mean_estimate

    values = [1.0] * 30 + [0.0] * 30  # 12 images of 5 questions each, every question of an image right or wrong
    images = [i // 5 for i in range(60)]
    plain, clustered = mean_estimate(values), clustered_mean_estimate(values, images)
    assert clustered["value"] == plain["value"] == 0.5 and clustered["clusters"] == 12

    def width(e):
        return e["ci95"][1] - e["ci95"][0]

    assert width(clustered) > 1.5 * width(plain)
