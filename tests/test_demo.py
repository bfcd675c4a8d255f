"""The main job end to end: a shortened `unimedvl demo` must learn (modality VQA beats the majority baseline).

`DemoConfig.quick`: about two minutes on 2 idle cores, the longest module of the default suite.
"""

import dataclasses
import json

import pytest

from unimedvl.demo import Demo, DemoConfig
from unimedvl.errors import UserError


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    summary = Demo(DemoConfig.quick(str(out))).run()
    return out, summary


def test_quick_demo_learns_modality(quick_demo):
    out, summary = quick_demo
    modality = summary["vqa"]["modality"]
    assert modality["count"] >= 20
    assert modality["accuracy"] > modality["majority_baseline"], modality
    for name in ("summary.csv", "report.html", "demo_summary.json"):
        assert (out / "report" / name).is_file()
    html = (out / "report" / "report.html").read_text()
    assert "<img" in html
    saved = json.loads((out / "report" / "demo_summary.json").read_text())
    assert {g["goal"] for g in saved["goals"]} == {g["goal"] for g in summary["goals"]}
    assert all("identity_psnr" in row for row in saved["restoration"]["medsynth"].values())


def test_rerun_reuses_stages_and_refuses_other_settings(quick_demo):
    out, summary = quick_demo
    logs = []
    again = Demo(DemoConfig.quick(str(out)), log=logs.append).run()
    assert again["vqa"] == summary["vqa"]
    assert sum("reusing the finished stage" in line for line in logs) == 7
    other = DemoConfig.quick(str(out))
    other.train_steps += 1
    with pytest.raises(UserError, match="other settings"):
        Demo(other, log=logs.append).run()


@pytest.mark.slow
def test_int8_gives_the_bf16_answers_and_edits_of_the_trained_model(quick_demo):
    # Issue 18's goal on a trained checkpoint: greedy answers equal on >= 90% of the VQA questions,
    # edit PSNR within 0.5 dB (bench/memory_agreement.py measures the full demo's model).
    from unimedvl.eval.batch import EvalSettings
    from unimedvl.eval.plan_agreement import compare_plan
    from unimedvl.guidance import RESTORATION
    from unimedvl.train.checkpointing import latest_checkpoint

    out, _ = quick_demo
    checkpoint = latest_checkpoint(out / "train" / "run")
    settings = EvalSettings(dtype="bf16", vae_min_size=64, vae_max_size=64, vit_min_size=56, vit_max_size=70,
                            max_new_tokens=8, guidance=dataclasses.replace(RESTORATION, num_timesteps=4))
    result = compare_plan(checkpoint, out / "data" / "medsynth" / "test.jsonl", {"quantize": "int8"}, settings,
                          max_edits=10)  # fmt: skip
    assert result["questions"] >= 50 and result["edits"] == 10 and not result["failed"]
    assert result["agreement"] >= 0.9, result["disagreements"]
    assert abs(result["psnr_difference"]) <= 0.5, result
