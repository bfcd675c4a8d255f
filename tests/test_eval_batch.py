"""`unimedvl eval`: spec outputs, resume after a kill, run mismatch, per-sample errors, torchrun sharding.

One debug checkpoint and a 12-record MedSynth test set (64 px, every task) serve every test;
sampling uses 3 timesteps and answers stop after 8 tokens.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimedvl.checkpoint.create import init_checkpoint
from unimedvl.cli import main as cli_main
from unimedvl.commands.eval import parse_args, run
from unimedvl.data.records import parse_record
from unimedvl.errors import ConfigError, UserError
from unimedvl.eval.runner.batch import (
    EvalSettings,
    build_statistics,
    load_samples,
    native_prediction,
    score_answer,
)
from unimedvl.eval.runner.result_files import consolidate, read_lines
from unimedvl.eval.runner.run_folder import model_ids
from unimedvl.eval.runner.selection import parse_task_limits, select_samples
from unimedvl.imaging.medical_io import LoadedImage
from unimedvl.medsynth.generator import generate_medsynth

ROOT = Path(__file__).resolve().parents[1]
N_TEST = 12
FAST = [
    "--vae-min-size",
    "64",
    "--vae-max-size",
    "64",
    "--vit-min-size",
    "56",
    "--vit-max-size",
    "70",
    "--num-timesteps",
    "3",
    "--max-new-tokens",
    "8",
    "--device",
    "cpu",
    "--no-progress",
    "--batch-size",
    "1",
]
# One sample at a time (not the default auto) in the runs compared to 1e-9: batches of other sizes give the same
# answers, with image metrics equal up to float rounding (test_batch_size_does_not_change_results).
OVERALL_KEYS = {"total_samples", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "avg_inference_time"}
TASK_KEYS = {"count", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std"}


# torchrun gives each worker one thread: the one-process runs use one too, so the two agree bit for bit.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return init_checkpoint("debug", tmp_path_factory.mktemp("ckpt") / "debug", seed=0)


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    out = tmp_path_factory.mktemp("medsynth")
    generate_medsynth(out, n_train=0, n_test=N_TEST, image_size=64)
    return out


def _eval(ckpt, data, out, *extra):
    return run(parse_args(["--model", str(ckpt), "--data", str(data), "--out", str(out), *FAST, *extra]))


def _lines(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "results.jsonl").read_text().splitlines()]


def _ids(path):
    return [json.loads(line)["sample_id"] for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def base_run(ckpt, medsynth, tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    assert _eval(ckpt, medsynth / "test.jsonl", out) == 0
    return out / "debug" / "test"  # OUT/<model_id>/<split>: the split defaults to the data file's name


def test_outputs_follow_the_spec(ckpt, base_run, medsynth, tmp_path):
    stats = json.loads((base_run / "statistics.json").read_text())
    assert OVERALL_KEYS <= set(stats["overall"]) and "timestamp" in stats
    assert stats["overall"]["total_samples"] == N_TEST and stats["overall"]["failed_samples"] == 0
    expected_tasks = {json.loads(line)["main_task_type"] for line in (medsynth / "test.jsonl").read_text().splitlines()}
    assert set(stats["by_task_type"]) == expected_tasks
    for entry in stats["by_task_type"].values():
        assert TASK_KEYS <= set(entry)
    assert stats["by_task_type"]["denoising"]["count"] == 2 and stats["by_task_type"]["denoising"]["psnr_mean"] > 0
    assert stats["overall"]["psnr_mean"] > 0 and 0 < stats["overall"]["ssim_mean"] < 1
    vqa = stats["vqa"]["by_question_type"]
    assert set(vqa) == {"modality", "presence"} and all(0 <= v["majority_baseline"] <= 1 for v in vqa.values())
    assert {"bleu_4", "rouge_l", "cider_d"} <= set(stats["report_generation"])
    # results.jsonl: one line per record, in the JSONL's order; the editing lines carry both passes.
    lines = _lines(base_run)
    assert [l["sample_id"] for l in lines] == [s.sample_id for s in load_samples(medsynth / "test.jsonl")]
    edit = next(l for l in lines if l["task_type"] == "denoising")
    assert isinstance(edit["understanding_text"], str) and edit["metric_mode"] == "reference"
    assert {"psnr", "ssim"} <= set(edit["metrics"]) and edit["inference_time"] > 0 and edit["error"] is None
    for kind in ("input", "GT", "pred"):
        assert (base_run / edit["images"][kind]).is_file()
    vqa_line = next(l for l in lines if l["task_type"] == "image_understanding")
    assert vqa_line["gold"] and "correct" in vqa_line["metrics"] and "answer" in vqa_line
    assert Path(vqa_line["input_paths"][0]).is_file()  # the report shows the question's image from there
    # Every edit carries its baseline (the input itself, or bicubic for super-resolution) scored the same way.
    sr = next(l for l in lines if l["task_type"] == "super_resolution")
    assert edit["baseline"] == "identity" and sr["baseline"] == "bicubic"
    assert 0 < edit["metrics"]["baseline_psnr"] and 0 < edit["metrics"]["baseline_ssim"] <= 1
    est = stats["estimates"]["by_task_type"]["denoising"]["psnr"]
    edits = [l for l in lines if l["task_type"] == "denoising"]
    assert est["n"] == 2 and est["value"] == pytest.approx(np.mean([l["metrics"]["psnr"] for l in edits]))
    assert est["baseline"]["value"] == pytest.approx(np.mean([l["metrics"]["baseline_psnr"] for l in edits]))
    assert est["ci95"][0] <= est["value"] <= est["ci95"][1]
    info = json.loads((base_run / "run_info.json").read_text())
    assert info["model"]["fingerprint"]["configs_sha256"]["llm_config.json"] and info["settings"]["num_timesteps"] == 3
    # Provenance: the checkpoint (step, weights hash), the data, the settings, software and machine.
    prov = stats["provenance"]
    assert prov["checkpoint"]["path"] == str(Path(ckpt).resolve()) and prov["checkpoint"]["training_step"] is None
    assert len(prov["checkpoint"]["weights_sha256"]) == 12 and "ema.safetensors" in prov["checkpoint"]["weights_files"]
    assert prov["data"]["n_records"] == N_TEST and prov["data"]["sha256"] == info["data"]["sha256"]
    assert prov["settings"]["num_timesteps"] == 3 and prov["software"]["torch"] and prov["machine"]["device"] == "cpu"
    # `unimedvl stats` reads it.
    csv = tmp_path / "summary.csv"
    assert cli_main(["stats", str(base_run.parent.parent), "-o", str(csv)]) == 0
    header, row = csv.read_text().splitlines()[:2]
    # Without --split the layout is OUT/<model_id>/<data file name>: stats labels model and split right.
    assert header.startswith("model_id,split,total_samples") and row.startswith(f"debug,test,{N_TEST},")


def test_resume_after_limit_and_truncated_line_matches_one_run(ckpt, medsynth, base_run, tmp_path, capsys):
    data = medsynth / "test.jsonl"
    assert _eval(ckpt, data, tmp_path, "--limit", "5") == 0
    results = tmp_path / "debug" / "test" / "results.jsonl"
    assert len(_ids(results)) == 5
    # A kill in the middle of a write leaves half a line: that sample must be redone, once.
    text = results.read_text()
    last = text.splitlines()[-1]
    results.write_text(text[: -len(last) - 1] + last[: len(last) // 2])
    capsys.readouterr()
    assert _eval(ckpt, data, tmp_path) == 0
    assert f"{N_TEST} sample(s), 4 already done, {N_TEST - 4} to run" in capsys.readouterr().err
    ids = _ids(results)
    assert ids == [s.sample_id for s in load_samples(data)]
    resumed = json.loads((tmp_path / "debug" / "test" / "statistics.json").read_text())["overall"]
    whole = json.loads((base_run / "statistics.json").read_text())["overall"]
    for key in ("total_samples", "psnr_mean", "ssim_mean", "correct_mean"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-9), key


def test_killed_process_restarts_without_loss_or_duplicates(ckpt, medsynth, tmp_path, capsys):
    data = medsynth / "test.jsonl"
    args = ["--model", str(ckpt), "--data", str(data), "--out", str(tmp_path), *FAST, "--num-timesteps", "6"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "unimedvl.commands.eval", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    results = tmp_path / "debug" / "test" / "results.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if results.is_file() and results.read_text().count("\n") >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    before = len(read_lines(results)[0])  # a kill in the middle of a write leaves a line that does not parse
    assert 3 <= before < N_TEST
    capsys.readouterr()
    assert run(parse_args(args)) == 0
    assert f"{before} already done, {N_TEST - before} to run" in capsys.readouterr().err
    assert _ids(results) == [s.sample_id for s in load_samples(data)]
    stats = json.loads((tmp_path / "debug" / "test" / "statistics.json").read_text())
    assert stats["overall"]["total_samples"] == N_TEST


def test_other_run_in_out_dir_is_refused_unless_overwrite(ckpt, medsynth, tmp_path):
    data = medsynth / "test.jsonl"
    assert _eval(ckpt, data, tmp_path, "--limit", "1") == 0
    with pytest.raises(UserError, match=r"seed \(0 -> 1\).*--overwrite"):
        _eval(ckpt, data, tmp_path, "--limit", "1", "--seed", "1")
    assert _eval(ckpt, data, tmp_path, "--limit", "1", "--seed", "1", "--overwrite") == 0
    assert json.loads((tmp_path / "debug" / "test" / "run_info.json").read_text())["settings"]["seed"] == 1
    assert len(_ids(tmp_path / "debug" / "test" / "results.jsonl")) == 1
    # Results without run_info.json cannot be matched to a run either.
    (tmp_path / "debug" / "test" / "run_info.json").unlink()
    with pytest.raises(UserError, match="no run_info.json"):
        _eval(ckpt, data, tmp_path, "--limit", "1", "--seed", "1")


def test_bad_samples_are_recorded_not_fatal(ckpt, medsynth, tmp_path):
    records = [json.loads(line) for line in (medsynth / "test.jsonl").read_text().splitlines()]
    edit = next(r for r in records if r["main_task_type"] == "denoising")
    vqa = next(r for r in records if r["main_task_type"] == "image_understanding")
    small_gt = tmp_path / "small_gt.png"  # a ground truth smaller than the prediction (48 vs 64 px)
    Image.open(medsynth / edit["output_img"][0]["path"]).resize((48, 48)).save(small_gt)
    bad = [
        {**edit, "sample_id": "missing_input", "input_img": [{"path": "images/nope.png"}]},
        {**edit, "sample_id": "missing_gt", "output_img": [{"path": "images/nope_gt.png"}]},
        {**{k: v for k, v in edit.items() if k != "output_img"}, "sample_id": "no_output_img"},
        {**edit, "sample_id": "resized_gt", "output_img": [{"path": str(small_gt)}]},
        vqa,
    ]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in bad) + '{"sample_id": "broken", "message": [\n')
    assert (
        run(
            parse_args(
                [
                    "--model",
                    str(ckpt),
                    "--data",
                    str(data),
                    "--data-dir",
                    str(medsynth),
                    "--out",
                    str(tmp_path / "out"),
                    *FAST,
                    "--batch-size",
                    "3",
                ]
            )
        )
        == 0
    )
    lines = {l["sample_id"]: l for l in _lines(tmp_path / "out" / "debug" / "bad")}
    assert list(lines) == [
        "missing_input",
        "missing_gt",
        "no_output_img",
        "resized_gt",
        vqa["sample_id"],
        "bad.jsonl:6",
    ]
    assert "nope.png" in lines["missing_input"]["error"] and "nope_gt.png" in lines["missing_gt"]["error"]
    assert "output image" in lines["no_output_img"]["error"] and "malformed JSON" in lines["bad.jsonl:6"]["error"]
    ok = lines["resized_gt"]
    assert ok["error"] is None and ok["metrics"]["size_mismatch"] and ok["metrics"]["gt_size"] == [48, 48]
    assert np.isfinite(ok["metrics"]["psnr"]) and lines[vqa["sample_id"]]["error"] is None
    stats = json.loads((tmp_path / "out" / "debug" / "bad" / "statistics.json").read_text())
    assert stats["overall"]["failed_samples"] == 4 and stats["overall"]["total_samples"] == 2
    assert stats["failures"]["by_task_type"] == {"denoising": 3, "unknown": 1}


@pytest.mark.distributed
def test_two_processes_match_one_process(ckpt, medsynth, base_run, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "unimedvl.commands.eval",
        "--model",
        str(ckpt),
        "--data",
        str(medsynth / "test.jsonl"),
        "--out",
        str(tmp_path),
        *FAST,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = _lines(tmp_path / "debug" / "test"), _lines(base_run)
    assert [l["sample_id"] for l in two] == [l["sample_id"] for l in one]
    assert {l["rank"] for l in two} == {0, 1} and not list((tmp_path / "debug" / "test").glob("results.rank*"))
    for a, b in zip(one, two):
        assert a.get("answer") == b.get("answer") and a.get("understanding_text") == b.get("understanding_text")
    s1, s2 = (json.loads((d / "statistics.json").read_text()) for d in (base_run, tmp_path / "debug" / "test"))
    for key in ("total_samples", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "correct_mean"):
        assert s2["overall"][key] == pytest.approx(s1["overall"][key], abs=1e-9), key
    counts = [{t: e["count"] for t, e in s["by_task_type"].items()} for s in (s1, s2)]
    assert counts[0] == counts[1]


def test_several_models_one_after_another(ckpt, medsynth, tmp_path):
    other = tmp_path / "copy" / "debug"
    shutil.copytree(ckpt, other)
    args = [
        "--model",
        str(ckpt),
        "--model",
        str(other),
        "--data",
        str(medsynth / "test.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--split",
        "test",
        *FAST,
        "--limit",
        "2",
    ]
    assert run(parse_args(args)) == 0
    ids = model_ids([Path(ckpt), other])
    assert ids[0] != ids[1] and all(i.endswith("debug") for i in ids)
    for model_id in ids:
        assert len(_ids(tmp_path / "out" / model_id / "test" / "results.jsonl")) == 2
    # With --split, `unimedvl stats OUT` labels each row by model and split.
    csv = tmp_path / "summary.csv"
    assert cli_main(["stats", str(tmp_path / "out"), "-o", str(csv)]) == 0
    rows = [line.split(",")[:3] for line in csv.read_text().splitlines()[1:]]
    assert sorted(rows) == sorted([[i, "test", "2"] for i in ids])
    with pytest.raises(ConfigError, match="given twice"):
        model_ids([Path(ckpt), Path(ckpt)])


# -- pure logic ------------------------------------------------------------------------------


def _record(answer, gpt="x", **extra):
    msg = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": gpt}]
    return parse_record({"main_task_type": "vqa", "message": msg, "answer": answer, **extra})


def test_answer_scoring():
    assert score_answer(_record("yes"), "Yes, there is.")["correct"] is True
    assert score_answer(_record("no"), "yes")["correct"] is False
    open_ = score_answer(_record("left lung"), "the left lung")
    assert open_["answer_kind"] == "open" and open_["correct"] and open_["recall"] == 1.0
    mc = score_answer(_record("B", options={"A": "CT", "B": "MRI"}), "The answer is B")
    assert mc["answer_kind"] == "multiple_choice" and mc["correct"]
    assert score_answer(_record("MRI", options=["CT", "MRI"]), "MRI")["correct"]  # gold as option text


def test_statistics_majority_baseline_and_failures():
    def line(i, gold, correct, qtype):
        return {
            "sample_id": str(i),
            "task_type": "vqa",
            "kind": "question",
            "answer": "a",
            "gold": gold,
            "question_type": qtype,
            "metrics": {"answer_kind": "closed", "correct": correct},
            "inference_time": 1.0,
            "error": None,
        }

    lines = [
        line(0, "yes", True, "presence"),
        line(1, "yes", False, "presence"),
        line(2, "no", True, "presence"),
        {"sample_id": "3", "task_type": "vqa", "metrics": {}, "error": "boom", "inference_time": None},
    ]
    stats = build_statistics(lines)
    presence = stats["vqa"]["by_question_type"]["presence"]
    assert presence["majority_answer"] == "yes" and presence["majority_baseline"] == pytest.approx(2 / 3)
    assert presence["accuracy"] == pytest.approx(2 / 3) and stats["overall"]["total_samples"] == 3
    assert stats["overall"]["failed_samples"] == 1 and stats["by_task_type"]["vqa"]["failed_samples"] == 1


def test_native_prediction_goes_back_through_the_window():
    gt = LoadedImage(np.zeros((4, 4), np.float32), window=(-1000.0, 1000.0))
    pred = Image.fromarray(np.full((4, 4, 3), 255, np.uint8))
    values, data_range = native_prediction(pred, gt)
    assert values.shape == (4, 4) and np.allclose(values, 1000.0) and data_range == 2000.0


def test_consolidate_drops_truncated_and_duplicate_lines(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"sample_id": "b"}\n{"sample_id": "a"}\n{"sample_id": "c"')
    (tmp_path / "results.rank1.jsonl").write_text('{"sample_id": "a", "dup": 1}\n{"sample_id": "d"}\n')
    merged = consolidate(tmp_path, {"a": 0, "b": 1, "c": 2, "d": 3})
    assert [l["sample_id"] for l in merged] == ["a", "b", "d"] and "dup" not in merged[0]
    assert _ids(tmp_path / "results.jsonl") == ["a", "b", "d"] and not (tmp_path / "results.rank1.jsonl").exists()


@pytest.mark.parametrize("size", ["5", "auto"])
def test_batch_size_does_not_change_results(ckpt, medsynth, base_run, tmp_path, capsys, size):
    assert _eval(ckpt, medsynth / "test.jsonl", tmp_path, "--batch-size", size) == 0
    chosen = re.search(r"eval: batch size (\d+) \(auto: .* free on cpu", capsys.readouterr().err)
    assert (chosen is None) == (size != "auto")  # the automatic size is said in one line
    if chosen:
        assert 1 <= int(chosen.group(1)) <= 8
    batched, single = _lines(tmp_path / "debug" / "test"), _lines(base_run)
    assert len(batched) == len(single) == N_TEST
    for a, b in zip(single, batched):
        assert a.get("answer") == b.get("answer") and a.get("understanding_text") == b.get("understanding_text")
        if "psnr" in a["metrics"]:
            assert b["metrics"]["psnr"] == pytest.approx(a["metrics"]["psnr"], abs=1e-3), a["sample_id"]


def test_auto_batch_size_from_free_memory(ckpt, capsys):
    from unimedvl.eval.runner.auto_batch import choose_batch_size

    assert parse_args(["--model", str(ckpt), "--data", "x.jsonl", "--out", "o"]).batch_size == "auto"  # the default
    assert choose_batch_size(10 * 10**9, 10**8, "cpu") == 8 and choose_batch_size(10 * 10**9, 10**8, "cuda") == 32
    assert choose_batch_size(10**9, 10**8, "cuda") == 5  # half the free memory over the per-sample estimate
    assert choose_batch_size(10**8, 10**9, "cuda") == 1 and choose_batch_size(None, 10**8, "cpu") == 1
    with pytest.raises(SystemExit):
        parse_args(["--model", str(ckpt), "--data", "x.jsonl", "--out", "o", "--batch-size", "many"])
    assert "'many' is neither a whole number nor auto" in capsys.readouterr().err


class _FailingModel:
    """Answers every request, but refuses any batch holding the text 'boom'."""

    def run(self, requests):
        from unimedvl.errors import DataError
        from unimedvl.inference.inferencer import Result

        if any("boom" in str(r.inputs[-1]) for r in requests):
            raise DataError("boom in this request")
        return [Result(text=f"answer {len(r.inputs)}") for r in requests]


def test_failed_batch_is_retried_one_by_one(tmp_path):
    from unimedvl.eval.runner.batch import BatchEvaluator

    data = tmp_path / "q.jsonl"
    questions = ["Is it fine?", "boom?", "Where?"]
    data.write_text(
        "".join(
            json.dumps(
                {
                    "main_task_type": "vqa",
                    "sample_id": f"q{i}",
                    "answer": "yes",
                    "message": [{"from": "human", "value": q}, {"from": "gpt", "value": "yes"}],
                }
            )
            + "\n"
            for i, q in enumerate(questions)
        )
    )
    lines = BatchEvaluator(_FailingModel(), EvalSettings(), tmp_path).evaluate(load_samples(data))
    assert [l["error"] for l in lines] == [None, "boom in this request", None]
    assert lines[0]["answer"] == "answer 1" and lines[2]["inference_time"] >= 0


def test_limit_per_task_caps_each_task_in_file_order(medsynth):
    samples = load_samples(medsynth / "test.jsonl", medsynth)
    tasks = {s.task_type for s in samples}
    limits = parse_task_limits(["0", "image_understanding=1", "denoising=5"])
    assert limits == {None: 0, "image_understanding": 1, "denoising": 5}
    picked = select_samples(samples, None, limits)
    first_vqa = next(s for s in samples if s.task_type == "image_understanding")
    assert [s.task_type for s in picked][:1] == ["image_understanding"] and picked[0] is first_vqa
    assert {s.task_type for s in picked} == {"image_understanding", "denoising"} and len(tasks) > 2
    assert len(picked) == 1 + min(5, sum(s.task_type == "denoising" for s in samples))
    assert select_samples(samples, 1, {}) == samples[:1]
    for bad in ("x", "-1", "=3", "vqa=-2"):
        with pytest.raises(ConfigError, match="limit-per-task"):
            parse_task_limits([bad])


def test_weights_choice_is_part_of_the_run_and_older_runs_still_resume(ckpt, medsynth, tmp_path):
    data = medsynth / "test.jsonl"
    assert _eval(ckpt, data, tmp_path, "--limit", "1", "--weights", "model") == 0
    info_path = tmp_path / "debug" / "test" / "run_info.json"
    info = json.loads(info_path.read_text())
    assert info["settings"]["weights"] == "model"
    with pytest.raises(UserError, match=r"weights \('model' -> 'ema'\)"):
        _eval(ckpt, data, tmp_path, "--limit", "1")
    # A run_info written before the setting existed resumes under its default.
    del info["settings"]["weights"]
    info_path.write_text(json.dumps(info))
    assert _eval(ckpt, data, tmp_path, "--limit", "1") == 0
    with pytest.raises(ConfigError, match="weights"):
        EvalSettings(weights="last")


def test_strength_is_a_setting_of_the_run_and_changes_only_the_edits(ckpt, medsynth, base_run, tmp_path):
    data = medsynth / "test.jsonl"
    assert _eval(ckpt, data, tmp_path, "--strength", "0.5") == 0
    run_dir = tmp_path / "debug" / "test"
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["settings"]["strength"] == 0.5
    with pytest.raises(UserError, match=r"strength \(0.5 -> 1.0\)"):
        _eval(ckpt, data, tmp_path)
    base = {line["sample_id"]: line for line in _lines(base_run)}
    changed = []
    for line in _lines(run_dir):
        if line["kind"] == "edit":
            ours = np.asarray(Image.open(run_dir / line["images"]["pred"]), dtype=int)
            theirs = np.asarray(Image.open(base_run / base[line["sample_id"]]["images"]["pred"]), dtype=int)
            changed.append(np.abs(ours - theirs).max() > 0)
        elif line["kind"] in ("question", "report"):
            assert line["answer"] == base[line["sample_id"]]["answer"]
    assert changed and all(changed)
    with pytest.raises(ConfigError, match="strength"):
        EvalSettings(strength=1.5)


def test_understanding_only_answers_like_the_full_model_and_fails_image_records_one_by_one(
    ckpt, medsynth, base_run, tmp_path
):
    data = medsynth / "test.jsonl"
    assert _eval(ckpt, data, tmp_path, "--components", "understanding") == 0
    run_dir = tmp_path / "debug" / "test"
    full = {l["sample_id"]: l for l in _lines(base_run)}
    for line in _lines(run_dir):
        if line["kind"] in ("question", "report"):
            assert line["error"] is None and line["answer"] == full[line["sample_id"]]["answer"]
        else:  # edit and text-to-image records need the generation weights
            assert 'components="all"' in line["error"] and "\n" not in line["error"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["settings"]["components"] == "understanding" and info["settings"]["quantize"] == "none"
    with pytest.raises(UserError, match=r"quantize \('none' -> 'int8'\)"):  # another plan is another run
        _eval(ckpt, data, tmp_path, "--components", "understanding", "--quantize", "int8")
