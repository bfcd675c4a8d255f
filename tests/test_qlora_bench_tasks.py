"""bench/qlora_finetune.py's unseen tasks: the questions and answers it writes from MedSynth records."""

import importlib.util
import json
import sys
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench():
    spec = importlib.util.spec_from_file_location("qlora_finetune_bench", BENCH / "qlora_finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def _record(i: int, modality: str, sizes: list[str], image: bool = True) -> dict:
    return {
        "sample_id": f"r{i}",
        "modality": modality,
        "question_type": "presence",
        "answer": "yes",
        "input_img": [{"path": f"images/r{i}.png", "height": 64, "width": 64}] if image else [],
        "lesions": [{"region": "left lung", "size": s} for s in sizes],
        "message": [
            {"from": "human", "value": "<image>\nIs there a lesion in this image?"},
            {"from": "gpt", "value": "yes"},
        ],
    }


def _demo(tmp_path: Path) -> Path:
    src = tmp_path / "demo" / "data" / "medsynth"
    src.mkdir(parents=True)
    train = [
        _record(0, "ct", ["small"]),
        _record(1, "x-ray", []),
        _record(2, "mri", ["large", "small"]),
        _record(3, "fundus", ["large"]),
        _record(4, "histology", [], image=False),
    ]
    test = [_record(5, "ct", []), _record(6, "histology", ["large"])]
    for split, rows in (("train", train), ("test", test)):
        (src / f"{split}_understanding.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "mix.yaml").write_text(yaml.safe_dump({"vlm_sft": {"dataset_names": ["x"], "is_mandatory": True}}))
    return tmp_path / "demo"


def test_each_task_asks_its_new_question_with_answers_from_the_record(tmp_path):
    bench = _bench()
    demo = _demo(tmp_path)
    expected = {
        "anatomy": (["chest", "chest", "brain", "eye"], ["chest", "tissue"]),
        "normal": (["abnormal", "normal", "abnormal", "abnormal"], ["normal", "abnormal"]),
        "size": (["small", "large"], ["large"]),
    }
    for task, (train_answers, test_answers) in expected.items():
        mix, info, train, test = bench.build_task(demo, tmp_path / task, task)
        assert [r["answer"] for r in train] == train_answers, task  # the record without an image is skipped
        assert [r["answer"] for r in test] == test_answers, task
        question = bench.TASKS[task][0]
        written = [json.loads(line) for line in (tmp_path / task / f"train_{task}.jsonl").read_text().splitlines()]
        assert [r["message"] for r in written] == [
            [{"from": "human", "value": "<image>\n" + question}, {"from": "gpt", "value": a}] for a in train_answers
        ]
        mixed = yaml.safe_load(mix.read_text())["vlm_sft"]
        assert mixed["dataset_names"] == [f"{task}_train"] and mixed["is_mandatory"] is True
        datasets = yaml.safe_load(info.read_text())["vlm_sft"]
        assert datasets[f"{task}_train"]["num_total_samples"] == len(train_answers)


def test_the_majority_baseline_is_the_train_sets_commonest_answer_scored_on_test(tmp_path):
    bench = _bench()
    _, _, train, test = bench.build_task(_demo(tmp_path), tmp_path / "anatomy", "anatomy")
    top, estimate = bench.majority(train, test)
    assert top == "chest"
    assert estimate["value"] == 0.5 and estimate["n"] == 2
