"""The majority baseline from a training split (unimedvl.eval.statistics.train_majority): the train answer scored on the
test set, or the test set's own answer named an upper bound when there is no training split."""

import json

import pytest

from benchmark_fixtures import vqa_rad_release
from unimedvl.benchmarks.reader import ReadOptions
from unimedvl.eval.report.tables import baseline_table, headline, markdown_table, results_table
from unimedvl.eval.runner.batch import build_statistics
from unimedvl.eval.statistics.baselines import MAJORITY, MAJORITY_UPPER_BOUND, question_baselines
from unimedvl.eval.statistics.stats_csv import StatsEntry, metrics_rows
from unimedvl.eval.statistics.train_majority import (
    benchmark_train_majority,
    jsonl_train_majority,
    majority_table,
    sibling_train_file,
)


def _question(i, gold, correct, qtype="presence"):
    return {
        "sample_id": f"q{i}",
        "task_type": "vqa",
        "kind": "question",
        "answer": "a",
        "gold": gold,
        "question_type": qtype,
        "metrics": {"answer_kind": "closed", "correct": correct},
        "inference_time": 1.0,
        "error": None,
    }


# test set: "yes" 3 of 4 (its own majority scores 75%); training split: "no" (scores 25% on the test set)
TEST_LINES = [
    _question(0, "yes", True),
    _question(1, "Yes", True),
    _question(2, "yes", False),
    _question(3, "no", True),
]


def _vqa_record(i, answer, qtype="presence"):
    return {
        "sample_id": f"s{i}",
        "main_task_type": "image_understanding",
        "input_img": [{"path": "a.png"}],
        "question_type": qtype,
        "answer_type": "closed",
        "message": [{"from": "human", "value": "<image>\nIs there a lesion?"}, {"from": "gpt", "value": answer}],
    }


def test_train_majority_is_scored_on_the_test_set():
    train = {
        "source": "train.jsonl",
        "answers": majority_table([("presence", "closed", a) for a in ("no", "No.", "yes", "no")]),
    }
    assert train["answers"] == {"presence": {"closed": "no"}}
    base = question_baselines(TEST_LINES, train["answers"])
    assert [base[f"q{i}"]["correct"] for i in range(4)] == [0, 0, 0, 1] and base["q0"]["name"] == MAJORITY
    stats = build_statistics(TEST_LINES, train_majority=train)
    est = stats["estimates"]["by_question_type"]["presence"]["accuracy"]
    assert est["baseline"]["name"] == "majority" and est["baseline"]["value"] == pytest.approx(0.25)
    vqa = stats["vqa"]
    assert vqa["majority_baseline"] == pytest.approx(0.25) and vqa["majority_source"] == "training split: train.jsonl"
    assert vqa["by_question_type"]["presence"]["majority_answer"] == "no"
    # a question type the training split lacks falls back to the test set's answer, named as such
    mixed = question_baselines([*TEST_LINES, _question(9, "ct", False, "modality")], train["answers"])
    assert mixed["q9"] == {"name": MAJORITY_UPPER_BOUND, "answer": "ct", "correct": 1.0}


def test_without_a_training_split_every_table_says_upper_bound():
    stats = build_statistics(TEST_LINES)
    est = stats["estimates"]["by_question_type"]["presence"]["accuracy"]
    assert est["baseline"]["name"] == MAJORITY_UPPER_BOUND and est["baseline"]["value"] == pytest.approx(0.75)
    assert stats["vqa"]["majority_baseline"] == pytest.approx(0.75)
    assert stats["vqa"]["majority_source"] == MAJORITY_UPPER_BOUND
    entry = StatsEntry(path=None, model_id="m", split="test", stats=stats)
    assert MAJORITY_UPPER_BOUND in headline(stats)  # the terminal summary
    assert any(MAJORITY_UPPER_BOUND in cell for row in metrics_rows([entry]) for cell in row)  # the CSV
    tables = [markdown_table(*results_table([entry])), markdown_table(*baseline_table([entry]))]  # the reports
    assert any(MAJORITY_UPPER_BOUND in table for table in tables)


def test_sibling_train_jsonl(tmp_path):
    test = tmp_path / "vqa_test.jsonl"
    test.write_text("".join(json.dumps(_vqa_record(i, a)) + "\n" for i, a in enumerate(("yes", "yes", "no"))))
    assert sibling_train_file(test) is None and jsonl_train_majority(test) is None
    train = tmp_path / "vqa_train.jsonl"
    train.write_text("".join(json.dumps(_vqa_record(i, a)) + "\n" for i, a in enumerate(("no", "no", "yes"))))
    assert sibling_train_file(test) == train
    assert jsonl_train_majority(test) == {"source": str(train), "answers": {"presence": {"closed": "no"}}}
    assert sibling_train_file(train) is None  # a train file is not its own training split


def test_benchmark_train_split(tmp_path):
    root = vqa_rad_release(tmp_path / "vqarad")  # train: MODALITY "yes" (closed), PLANE "axial" (open)
    table = benchmark_train_majority("vqa-rad", root, None, ReadOptions())
    answers = sorted(a for kinds in table["answers"].values() for a in kinds.values())
    assert answers == ["axial", "yes"] and "train" in table["source"]
    assert benchmark_train_majority("vqa-rad", root, "train", ReadOptions()) is None  # evaluating train itself
