"""``unimedvl eval --benchmark`` + ``unimedvl stats`` end to end on a debug checkpoint, two benchmarks in one run."""

import json

import pytest

import benchmark_fixtures as F
from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.cli import main as cli_main

FAST = [
    "--vae-min-size",
    "64",
    "--vae-max-size",
    "64",
    "--vit-min-size",
    "56",
    "--vit-max-size",
    "70",
    "--max-new-tokens",
    "8",
    "--device",
    "cpu",
    "--no-progress",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    ckpt = init_checkpoint("debug", tmp / "ckpt" / "debug", seed=0)
    rad = F.vqa_rad_parquet(tmp / "vqa_rad")
    tsv = F.vlmevalkit_tsv(tmp / "gmai" / "GMAI-MMBench_VAL.tsv")
    omni = F.omnimedvqa(tmp / "omni")
    out = tmp / "out"
    argv = [
        "eval",
        "--model",
        str(ckpt),
        "--benchmark",
        f"vqa-rad={rad}",
        "--benchmark",
        f"gmai-mmbench={tsv}",
        "--benchmark",
        f"slake={omni}",
        "--out",
        str(out),
        *FAST,
    ]
    return argv, out


def test_two_benchmarks_in_one_run_then_stats(run, capsys):
    argv, out = run
    assert cli_main(argv) == 1  # the third folder is OmniMedVQA's layout, not SLAKE's: reported, the rest ran
    err = capsys.readouterr().err
    assert "not a slake layout" in err and "it looks like omnimedvqa" in err
    assert "parquet:2: vqa-rad question 3: the image bytes are not an image" in err
    rad = json.loads((out / "debug" / "vqa-rad-test" / "statistics.json").read_text())
    block = rad["benchmark"]
    assert (block["name"], block["split"], block["paper_column"]) == ("vqa-rad", "test", "VQA-RAD")
    assert block["n_questions"] == 4 and block["n_scored"] == 3 and block["n_failed"] == 1
    assert rad["failures"]["count"] == 1 and "not an image" in rad["failures"]["samples"][0]["error"]
    acc = block["overall"]["accuracy"]
    assert acc["n"] == 3 and acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]
    assert block["overall"]["closed_accuracy"]["n"] == 2 and block["overall"]["open_recall"]["n"] == 1
    assert "single word or phrase" in block["prompt_template"]["text"]
    sources = json.loads((out / "_benchmarks" / "vqa-rad-test.sources.json").read_text())
    assert len(sources) == 2 and all(len(c["md5"]) == 32 for c in sources.values())  # both test shards
    assert len(block["source_md5"]) == 12 and block["scoring_protocol"] == "unimedvl"
    assert set(block["accuracy_by_protocol"]) == {"unimedvl", "llava-med", "multimedeval", "medevalkit", "vlmevalkit"}
    assert "warning: 4 question(s) in vqa-rad test, but the OSF release and the HF copy has 451" in err
    assert rad["vqa"]["majority_source"].startswith("training split: ")  # the majority answer of vqa-rad's train
    assert json.loads((out / "_benchmarks" / "vqa-rad-test.train_majority.json").read_text())["answers"]
    gmai = json.loads((out / "debug" / "gmai-mmbench-val" / "statistics.json").read_text())["benchmark"]
    assert gmai["n_scored"] == 4 and gmai["n_unscored"] == 1 and gmai["n_failed"] == 1
    assert set(gmai["by_group"]) >= {"category", "department", "clinical vqa task", "perceptual granularity"}
    assert sum(gmai["multiple_choice_matched_by"].values()) == 4
    lines = [json.loads(l) for l in (out / "debug" / "gmai-mmbench-val" / "results.jsonl").read_text().splitlines()]
    answered = [l for l in lines if not l["error"]]
    assert all(
        l["instruction"].endswith("Answer with the option's letter from the given choices directly.") for l in answered
    )
    assert all(l["metrics"].get("choice") in (*"ABCDEZ", None) for l in answered)

    # The same command again: the conversion gives the same data, so every sample is already done.
    assert cli_main(argv) == 1
    assert "4 sample(s), 4 already done, 0 to run" in capsys.readouterr().err

    csv = out / "summary.csv"
    assert cli_main(["stats", str(out), "-o", str(csv), "--html", str(out / "report.html")]) == 0
    printed = capsys.readouterr().out
    assert "| model | VQA-RAD | SLAKE | PathVQA | OmniMedVQA | GMAI-MMBench |" in printed
    row = next(l for l in printed.splitlines() if l.startswith("| debug |"))
    assert f"(n={acc['n']})" in row and "(n=4)" in row
    assert "| UniMedVL-14B (published, paper's protocol) | 61.9 | 75.4 | 53.5 | 85.8 | 60.75 |" in printed
    assert "arXiv:2510.15710" in printed and "Unconfirmed" in printed
    assert (out / "summary_benchmarks.md").read_text() in printed
    assert "GMAI-MMBench" in (out / "summary_benchmarks.csv").read_text()
    assert "Standard benchmarks" in (out / "report.html").read_text()
    _, *rows = csv.read_text().splitlines()
    assert {r.split(",")[1] for r in rows} == {"vqa-rad-test", "gmai-mmbench-val"}  # the split column
