"""--protocol: each harness's published rules on hand-edited answers, Chinese yes/no, and ``unimedvl score``."""

import csv
import json

import pytest

from benchmark_fixtures import vlmevalkit_tsv, vqa_rad_parquet, vqa_rad_release
from unimedvl import cli
from unimedvl.benchmarks.protocols import PROTOCOLS, correct, get_protocol, vlmevalkit_choice
from unimedvl.benchmarks.scoring import score_fields
from unimedvl.commands.score import read_predictions
from unimedvl.errors import ConfigError, DataError
from unimedvl.metrics import text as T

OPTIONS = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}


@pytest.mark.parametrize(
    "kind, gold, prediction, expected",
    [
        # (unimedvl, llava-med, multimedeval, medevalkit, vlmevalkit)
        ("closed", "no", "There is no evidence of that", (False, True, True, True, False)),
        ("closed", "yes", "Yes, clearly.", (True, True, True, True, True)),
        ("closed", "no", "nodule present", (False, True, False, True, False)),  # substring rules read "no" in "nodule"
        ("closed", "yes", "yes or no", (True, True, True, False, True)),  # MedEvalKit: both words, no answer
        ("closed", "Left", "The left lung", (False, True, True, False, False)),  # a closed answer that is not yes/no
        ("open", "left lung", "the left lung", (True, True, True, False, True)),  # MedEvalKit: raw exact match
        ("open", "pleural effusion", "small effusion", (False, False, False, False, False)),
        ("open", "left lower lobe", "lobe lower left", (False, False, True, False, False)),  # recall 1 >= 0.75
        ("open", "liver", "The answer is: liver.", (False, True, True, False, False)),  # MedEvalKit keeps ": liver."
        ("open", "liver", "<answer>Liver</answer>", (False, True, True, True, False)),  # ... and reads <answer> tags
    ],
)
def test_each_protocol_scores_hand_edited_answers_as_its_harness(kind, gold, prediction, expected):
    got = tuple(
        correct(PROTOCOLS[n], kind, prediction, gold)
        for n in ("unimedvl", "llava-med", "multimedeval", "medevalkit", "vlmevalkit")
    )
    assert got == expected


@pytest.mark.parametrize(
    "prediction, current, legacy",
    [
        ("B", "B", "B"),
        ("B, no, ultrasound image here", "D", "B"),  # the letter is not among the last five tokens
        ("The correct answer is C because of the bones", "C", "C"),
        ("I would say A or maybe the answer is B", "B", None),  # two letters: "answer is B" decides
        ("mri " * 30, None, "B"),  # text rule skipped for an answer much longer than the options
    ],
)
def test_vlmevalkit_current_matching_differs_from_the_legacy_path(prediction, current, legacy):
    letter, _ = vlmevalkit_choice(prediction, OPTIONS)
    assert (letter if letter != "Z" else None) == current
    legacy_letter, _ = PROTOCOLS["unimedvl"].choice(prediction, OPTIONS)
    assert (legacy_letter if legacy_letter != "Z" else None) == legacy


def test_chinese_yes_no_for_slake_zh():
    assert T.closed_correct("是的", "是") and T.closed_correct("不是", "否") and T.closed_correct("否。", "否")
    assert not T.closed_correct("不是", "是") and not T.closed_correct("是", "否")
    assert T.closed_correct("No.", "no") and not T.closed_correct("CT", "是")


def test_the_record_protocol_sets_correct_and_every_protocol_is_kept():
    fields = {"answer_type": "closed", "question": "Q?", "protocol": "llava-med"}
    scored = score_fields(fields, "There is no evidence of that", "no")
    assert scored["correct"] is True and scored["protocol"] == "llava-med"
    assert scored["by_protocol"]["unimedvl"] is False and scored["by_protocol"]["medevalkit"] is True
    assert score_fields({**fields, "protocol": None}, "There is no evidence of that", "no")["correct"] is False
    with pytest.raises(ConfigError, match="--protocol 'harness' is not known; choose one of unimedvl"):
        get_protocol("harness")


def test_score_rescores_llava_med_style_predictions_without_a_model(tmp_path, capsys):
    root = vqa_rad_release(tmp_path / "vqa_rad")  # test qids 1..5: Yes, no, Left, the liver, pleural effusion
    preds = tmp_path / "answers.jsonl"
    rows = [
        {"question_id": "1", "text": "Yes"},
        {"question_id": "2", "text": "There is no mass"},
        {"question_id": "3", "text": "The left side"},
        {"question_id": "4", "text": "liver"},
        {"question_id": "5", "text": "effusion"},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "score.json"
    assert (
        cli.main(
            [
                "score",
                "--predictions",
                str(preds),
                "--benchmark",
                f"vqa-rad={root}",
                "--protocol",
                "llava-med",
                "--out",
                str(out),
            ]
        )
        == 0
    )  # the missing image does not matter here
    text = capsys.readouterr().out
    assert "vqa-rad-test: 5 question(s) scored, 0 without a prediction, 0 prediction id(s)" in text
    block = json.loads(out.read_text())["benchmark"]
    by = {k: v["value"] for k, v in block["accuracy_by_protocol"].items()}
    # unimedvl: yes, (no: "There" first), (Left: exact), liver, (effusion) -> 2/5; llava-med: +no +left -> 4/5
    assert by["unimedvl"] == pytest.approx(2 / 5) and by["llava-med"] == pytest.approx(4 / 5)
    assert block["scoring_protocol"] == "llava-med" and block["overall"]["accuracy"]["value"] == pytest.approx(4 / 5)
    assert "llava-med     accuracy  80.00%" in text and "<- --protocol" in text


def test_score_reads_vlmevalkit_prediction_tables_and_counts_missing_ids(tmp_path, capsys):
    tsv = vlmevalkit_tsv(tmp_path / "MMB.tsv", broken_row=False)
    with tsv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    preds = tmp_path / "model_MMB.csv"
    with preds.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "answer", "prediction"])  # VLMEvalKit keeps the gold answer beside the prediction
        for row in rows[:-1]:
            writer.writerow([row["index"], row.get("answer", ""), f"The answer is {row.get('answer') or 'A'}"])
        writer.writerow(["999", "A", "A"])
    status = cli.main(["score", "--predictions", str(preds), "--benchmark", f"vlmevalkit={tsv}"])
    text = capsys.readouterr().out
    assert status == 1 and "1 without a prediction, 1 prediction id(s) not in the benchmark: 999" in text


def test_score_names_a_predictions_file_it_cannot_use(tmp_path, capsys):
    root = vqa_rad_parquet(tmp_path / "snap")
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"question_id": 0, "score": 1}) + "\n")
    assert cli.main(["score", "--predictions", str(bad), "--benchmark", f"vqa-rad={root}"]) != 0
    assert "p.jsonl: record 1 has no id (question_id, id" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"its keys: question_id, score"):
        read_predictions(bad)
