"""The main job end to end: a shortened `unimedvl demo` must learn (modality VQA beats the majority baseline).

`DemoConfig.quick`: about two minutes on 2 idle cores, the longest module of the default suite.
"""

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
    cfg = DemoConfig.quick(str(out))
    assert f"strength {cfg.strength:g}" in summary["sampling"] and summary["sampling"] in summary["lines"]
    assert summary["sampling"] in html  # the report says how the images were made
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
