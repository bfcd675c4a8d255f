"""`unimedvl stats`: CSV layout (spec medical.md section 5), model_id/split rule, malformed files,
compute_statistics, charts and the HTML report."""

import argparse
import base64
import csv
import io
import json
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimedvl.commands import stats as stats_command
from unimedvl.errors import DataError, UserError
from unimedvl.eval.report import writer as report
from unimedvl.eval.statistics.stats_csv import compute_statistics, csv_header, identify

HEAD = ["model_id", "split", "total_samples", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "avg_inference_time"]


def _task(count, psnr, ssim):
    return {"count": count, "psnr_mean": psnr, "psnr_std": 1.5, "ssim_mean": ssim, "ssim_std": 0.05}


def _write_stats(run_dir: Path, tasks: dict, **overall_extra) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    overall = {
        "total_samples": sum(t["count"] for t in tasks.values()),
        "psnr_mean": 25.5,
        "psnr_std": 2.25,
        "ssim_mean": 0.75,
        "ssim_std": 0.125,
        "avg_inference_time": 12.5,
        **overall_extra,
    }
    path = run_dir / "statistics.json"
    path.write_text(json.dumps({"overall": overall, "by_task_type": tasks, "timestamp": "2025-01-02T03:04:05"}))
    return path


def _cli(argv) -> int:
    parser = argparse.ArgumentParser(prog="unimedvl")
    stats_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stats", *map(str, argv)])
    return args.func(args)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def results_tree(tmp_path):
    root = tmp_path / "results"
    # task order in the file is not alphabetical on purpose
    _write_stats(
        root / "ckpt_a" / "test",
        {
            "super_resolution": _task(4, 27.25, 0.875),
            "denoising": _task(3, 30.5, 0.9),
            "cross_modal_synthesis": _task(3, 21.0, 0.5),
        },
    )
    tasks_b = {"denoising": _task(5, 29.0, 0.8)}
    tasks_b["denoising"]["ssim_std"] = None
    _write_stats(root / "ckpt_b" / "val", tasks_b)
    return root


def test_csv_layout_header_order_and_padding(results_tree, tmp_path):
    out = tmp_path / "summary.csv"
    assert _cli([results_tree, "-o", out]) == 0
    rows = _read_csv(out)
    task_cols = [
        f"task{i}_{f}" for i in (1, 2, 3) for f in ("type", "count", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std")
    ]
    assert rows[0] == HEAD + task_cols
    assert rows[0] == csv_header(3)
    assert rows[1] == [
        "ckpt_a",
        "test",
        "10",
        "25.5",
        "2.25",
        "0.75",
        "0.125",
        "12.5",
        "cross_modal_synthesis",
        "3",
        "21.0",
        "1.5",
        "0.5",
        "0.05",
        "denoising",
        "3",
        "30.5",
        "1.5",
        "0.9",
        "0.05",
        "super_resolution",
        "4",
        "27.25",
        "1.5",
        "0.875",
        "0.05",
    ]
    # one task: its null ssim_std is blank, and two whole task groups of blank cells follow
    assert (
        rows[2]
        == ["ckpt_b", "val", "5", "25.5", "2.25", "0.75", "0.125", "12.5", "denoising", "5", "29.0", "1.5", "0.8", ""]
        + [""] * 12
    )
    assert len(rows) == 3


def test_model_id_and_split_rule(results_tree, tmp_path):
    r = Path("/data/results")
    assert identify(r, r / "statistics.json") == ("results", "results")
    assert identify(r, r / "test" / "statistics.json") == ("results", "test")
    assert identify(r, r / "ckpt" / "test" / "statistics.json") == ("ckpt", "test")
    assert identify(r, r / "model" / "step_1000" / "test" / "statistics.json") == ("model/step_1000", "test")
    # naming the checkpoint directory or the results directory gives the same row labels
    out = tmp_path / "one.csv"
    assert _cli([results_tree / "ckpt_a", "-o", out]) == 0
    assert _read_csv(out)[1][:2] == ["ckpt_a", "test"]
    assert _cli([results_tree / "ckpt_a" / "test", "-o", out]) == 0
    assert _read_csv(out)[1][:2] == ["test", "test"]
    # overlapping arguments do not duplicate rows
    assert _cli([results_tree, results_tree / "ckpt_b", "-o", out]) == 0
    assert [r[:2] for r in _read_csv(out)[1:]] == [["ckpt_a", "test"], ["ckpt_b", "val"]]


def test_malformed_statistics_are_skipped_with_a_warning(results_tree, tmp_path, capsys):
    bad_json = results_tree / "ckpt_c" / "test" / "statistics.json"
    bad_json.parent.mkdir(parents=True)
    bad_json.write_text("{not json")
    no_overall = results_tree / "ckpt_d" / "test" / "statistics.json"
    no_overall.parent.mkdir(parents=True)
    no_overall.write_text(json.dumps({"overall": [], "by_task_type": {}}))
    bad_value = _write_stats(
        results_tree / "ckpt_e" / "test", {"denoising": {**_task(1, 20.0, 0.5), "psnr_mean": "high"}}
    )
    out = tmp_path / "summary.csv"
    assert _cli([results_tree, "-o", out]) == 0
    err = capsys.readouterr().err
    for path, why in [
        (bad_json, "unreadable JSON"),
        (no_overall, "overall"),
        (bad_value, "by_task_type.denoising.psnr_mean"),
    ]:
        assert re.search(rf"warning: {re.escape(str(path))}: .*{re.escape(why)}", err), err
    assert [r[0] for r in _read_csv(out)[1:]] == ["ckpt_a", "ckpt_b"]


def test_no_statistics_is_an_error_with_exit_1(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli([empty, "-o", tmp_path / "s.csv"]) == 1
    assert "error: no statistics.json found under" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
    (empty / "statistics.json").write_text("[]")
    assert _cli([empty, "-o", tmp_path / "s.csv"]) == 1
    assert "no usable statistics.json" in capsys.readouterr().err
    assert _cli([tmp_path / "typo", "-o", tmp_path / "s.csv"]) == 1
    err = capsys.readouterr().err
    assert "typo: not a directory" in err and "error: no statistics.json" in err


def test_compute_statistics_and_csv_roundtrip(tmp_path):
    results = [
        {
            "sample_id": "a",
            "task_type": "denoising",
            "psnr": 30.0,
            "ssim": 0.9,
            "inference_time": 10.0,
            "metric_mode": "reference",
        },
        {
            "sample_id": "b",
            "task_type": "denoising",
            "psnr": math.inf,
            "ssim": 1.0,
            "inference_time": 12.0,
            "metric_mode": "reference",
        },
        {
            "sample_id": "c",
            "task_type": "denoising",
            "psnr": 34.0,
            "ssim": 0.8,
            "inference_time": 14.0,
            "metric_mode": "reference",
        },
        {
            "sample_id": "d",
            "main_task_type": "image_understanding",
            "psnr": None,
            "ssim": None,
            "inference_time": 2.0,
            "vqa_correct": True,
        },
        {"sample_id": "e", "main_task_type": "image_understanding", "inference_time": 4.0, "vqa_correct": False},
    ]
    stats = compute_statistics(results)
    datetime.fromisoformat(stats["timestamp"])
    json.dumps(stats, allow_nan=False)  # no NaN / inf leaks into the file
    ov = stats["overall"]
    assert ov["total_samples"] == 5 and ov["num_infinite_psnr"] == 1
    assert ov["psnr_mean"] == 32.0 and ov["psnr_std"] == 2.0  # inf kept out
    assert ov["ssim_mean"] == pytest.approx(0.9) and ov["avg_inference_time"] == 8.4
    assert ov["vqa_correct_mean"] == 0.5
    assert stats["metric_mode"] == "reference"
    assert list(stats["by_task_type"]) == ["denoising", "image_understanding"]
    und = stats["by_task_type"]["image_understanding"]
    assert und["count"] == 2 and und["psnr_mean"] is None and und["vqa_correct_mean"] == 0.5
    assert stats["by_task_type"]["denoising"]["ssim_mean"] == pytest.approx(0.9)

    run = tmp_path / "res" / "m1" / "test"
    run.mkdir(parents=True)
    (run / "statistics.json").write_text(json.dumps(stats))
    assert _cli([tmp_path / "res", "-o", tmp_path / "s.csv"]) == 0
    rows = _read_csv(tmp_path / "s.csv")
    assert rows[0] == csv_header(2)  # understanding metrics add no CSV columns
    assert rows[1][:4] == ["m1", "test", "5", "32.0"]
    assert rows[1][14:18] == ["image_understanding", "2", "", ""]

    with pytest.raises(DataError, match="metric modes"):
        compute_statistics([{"psnr": 1.0, "metric_mode": "reference"}, {"psnr": 1.0, "metric_mode": "native"}])


def _png(color, size=(32, 24)):
    return Image.new("RGB", size, color)


def test_plot_and_html_report_of_statistics_without_intervals(tmp_path):
    # statistics.json files from before intervals existed: means without intervals, cards from the images.
    run = tmp_path / "res" / "ckpt" / "test"
    _write_stats(run, {"denoising": _task(3, 30.0, 0.9), "super_resolution": _task(1, 25.0, 0.7)}, vqa_accuracy=0.625)
    _write_stats(tmp_path / "res" / "ckpt2" / "test", {"denoising": _task(3, 28.0, 0.85)})
    images = run / "images"
    images.mkdir()
    lines = []
    for i, task in enumerate(["denoising", "denoising", "denoising", "super_resolution"]):
        for j, kind in enumerate(("input", "GT", "pred")):
            _png((60 * i, 80 * j, 200)).save(images / f"s{i}_{kind}.png")
        lines.append(
            json.dumps(
                {"sample_id": f"s{i}", "task_type": task, "psnr": 30.0 + i, "understanding_text": f"<b>finding {i}</b>"}
            )
        )
    lines.insert(1, "{broken")
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")

    plots, page = tmp_path / "plots", tmp_path / "report" / "index.html"
    assert (
        _cli([tmp_path / "res", "-o", tmp_path / "s.csv", "--plot", plots, "--html", page, "--samples-per-task", "2"])
        == 0
    )
    names = sorted(p.name for p in plots.glob("*.png"))
    # psnr and ssim differ between the runs; accuracy has one bar and time per sample is a cost: no chart
    assert names == ["psnr.png", "ssim.png"]
    for p in plots.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = page.read_text()
    assert "<td>62.5 n=4</td>" in text and "<td>accuracy (%)</td>" in text  # rounded, unit in the label
    assert "<td>30.00 n=3</td>" in text and "0.625" not in text
    # two denoising samples (the third is over the limit) and the super-resolution one
    for sid in ("s0", "s1", "s3"):
        for kind in ("input", "GT", "pred"):
            assert f'alt="{sid} {kind}"' in text
    assert "s2 GT" not in text
    assert "&lt;b&gt;finding 1&lt;/b&gt;" in text and "<b>finding" not in text
    assert "1 unreadable line(s)" in text
    assert "No sample images found." in text  # ckpt2 has none
    # the embedded GT of s1 is that image, pixel for pixel
    m = re.search(r'alt="s1 GT" title="s1 GT" src="data:image/png;base64,([^"]+)"', text)
    embedded = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))))
    assert np.array_equal(embedded, np.asarray(_png((60, 80, 200))))
    # charts are embedded too, and nothing is linked from outside the file
    assert text.count('src="data:image/png;base64,') == len(names) + 9
    assert 'src="http' not in text and "src='http" not in text
    # the tables again, as Markdown beside the page
    md = page.with_suffix(".md").read_text()
    assert "| overall | PSNR (dB) |  | 25.50 n=4 | 25.50 n=3 |" in md and "<" not in md


def test_html_without_results_jsonl_uses_image_names(tmp_path):
    run = tmp_path / "res" / "ckpt" / "test"
    _write_stats(run, {"denoising": _task(1, 30.0, 0.9)})
    for kind in ("input", "GT", "pred"):
        _png((10, 20, 30)).save(run / f"x7_{kind}.png")  # images beside statistics.json
    page = tmp_path / "r.html"
    assert _cli([tmp_path / "res", "-o", tmp_path / "s.csv", "--html", page]) == 0
    text = page.read_text()
    assert 'alt="x7 pred"' in text and "(no task type)" in text


def test_train_log_loss_curves_in_plots_and_html(results_tree, tmp_path):
    run = tmp_path / "run_a"
    run.mkdir()
    rows = [{"step": s, "loss": 3.0 / s, "ce": 2.0 / s, "mse": 1.0 / s} for s in (1, 10, 20)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{truncated\n")
    assert report.read_train_log(run) == rows  # the killed-mid-write last line is skipped
    plots, page = tmp_path / "plots", tmp_path / "r.html"
    assert (
        _cli(
            [
                results_tree,
                "-o",
                tmp_path / "s.csv",
                "--plot",
                plots,
                "--html",
                page,
                "--train-log",
                run / "metrics.jsonl",
            ]
        )
        == 0
    )
    curves = Image.open(plots / "loss_curves.png")
    assert curves.width > 2 * curves.height  # three panels side by side: loss, ce, mse
    text = page.read_text()
    assert "<h2>Training</h2>" in text and 'alt="loss curves"' in text
    with pytest.raises(UserError, match="no metrics.jsonl"):
        report.read_train_log(tmp_path / "nothing")


def test_preface_sections_come_first(results_tree, tmp_path):
    from unimedvl.eval.statistics.stats_csv import load_statistics

    entries, _ = load_statistics([results_tree])
    written = report.write_report(
        entries,
        tmp_path / "s.csv",
        html_path=tmp_path / "r.html",
        preface=[("Goals", report.html_table(["a"], [["<x>"]]))],
        out=lambda _: None,
    )
    text = written["html"].read_text()
    assert text.index("<h2>Goals</h2>") < text.index("<h2>Split: test</h2>")
    assert "&lt;x&gt;" in text


def test_two_checkpoints_on_two_splits_give_both_models_in_every_table_and_the_curves(tmp_path, capsys):
    from report_fixtures import make_eval_tree, result_lines
    from unimedvl.eval.statistics.stats_csv import load_statistics, summary_table
    from unimedvl.metrics.info import format_difference

    root = make_eval_tree(tmp_path / "eval", steps=(100, 200), splits=("test", "val"))
    out, plots, page = tmp_path / "out" / "summary.csv", tmp_path / "out" / "plots", tmp_path / "out" / "report.html"
    assert _cli([root, "-o", out, "--plot", plots, "--html", page]) == 0
    printed = capsys.readouterr().out

    # The CSV: the reference's columns byte-identical to what they were without intervals, then the extras.
    entries, _ = load_statistics([root])
    legacy = [
        type(e)(e.path, e.model_id, e.split, {k: v for k, v in e.stats.items() if k != "estimates"}) for e in entries
    ]
    legacy_header, legacy_rows = summary_table(legacy)
    rows = _read_csv(out)
    width = len(legacy_header)
    assert rows[0][:width] == legacy_header and rows[0][width : width + 2] == ["training_step", "psnr_ci95_low"]
    assert [r[:width] for r in rows[1:]] == legacy_rows
    assert out.read_text().splitlines()[1].startswith(",".join(legacy_rows[0]) + ",")
    by_label = {(r[0], r[1]): dict(zip(rows[0], r)) for r in rows[1:]}
    assert set(by_label) == {(f"step_{s:07d}", sp) for s in (100, 200) for sp in ("test", "val")}
    row = by_label[("step_0000200", "test")]
    assert row["training_step"] == "200" and float(row["psnr_ci95_low"]) <= float(row["psnr_mean"])
    assert float(row["psnr_baseline"]) == pytest.approx(22.5) and row["accuracy_n"] == "16"
    metrics_rows = _read_csv(out.with_name("summary_metrics.csv"))
    assert {(r[0], r[1]) for r in metrics_rows[1:]} == set(by_label)

    # Curves over training and bar charts, PNG files.
    names = {p.name for p in plots.glob("*.png")}
    assert {"curve_psnr.png", "curve_accuracy.png", "psnr.png", "accuracy.png"} <= names

    # Every table of the page and of report.md holds both checkpoints, for both splits.
    text, md = page.read_text(), page.with_suffix(".md").read_text()
    for split in ("test", "val"):
        assert f"## {split}: results" in md and f"## {split}: checkpoints compared with step_0000100 (paired)" in md
        assert f"<h2>Split: {split}</h2>" in text and f"{split}: results" in printed
    for table in re.findall(r"<table>(.*?)</table>", text)[:6]:
        if "<th>metric</th>" in table:
            assert "step_0000200" in table, table[:300]
    for header in re.findall(r"^\| group \| metric \|.*$", md, flags=re.M):
        assert "step_0000200" in header, header
    assert md.count("| group | metric | baseline | step_0000100 | step_0000200 |") == 2

    # The paired difference of the later checkpoint, as computed by hand from the two runs' lines.
    later, earlier = result_lines(200, "test"), result_lines(100, "test")
    diffs = [
        a["metrics"]["psnr"] - b["metrics"]["psnr"]
        for a, b in zip(later, earlier)
        if a.get("task_type") == "denoising" and a["kind"] == "edit"
    ]
    expected = format_difference("psnr", {"value": float(np.mean(diffs)), "ci95": None}, unit=False)
    assert re.search(rf"\| denoising \| PSNR \(dB\) \| {re.escape(expected)} \[", md), expected

    # Rounded to the metric's precision: PSNR to 0.01 dB, accuracy to 0.1 %, no long floats anywhere.
    assert "<td>identity 22.00 [20.00, 24.00] n=3</td>" in text  # denoising baselines 20, 22, 24 dB
    assert not re.search(r"\d\.\d{5,}", md)
    # Provenance, the sample cards of every kind, the failed sample and its error.
    assert "<td>training step</td><td>100</td>" in text.replace("\n", "")
    assert "000000000200" in text  # the weights hash of step 200
    assert "Question 0 about the image?" in text and "<span class='ok'>correct</span>" in text
    assert "reference report" in text and "MRI image. Two lesions in the right lobe." in text
    assert "Failed samples (1)" in text and "images/missing.png: image file not found" in text


def test_curves_keep_training_runs_apart_and_mixed_data_is_flagged(tmp_path):
    from report_fixtures import write_run
    from unimedvl.eval.report.charts import curve_series
    from unimedvl.eval.statistics.stats_csv import load_statistics

    for run in ("run_a", "run_b"):
        for step in (100, 200):
            write_run(
                tmp_path / "eval" / run / f"step_{step:07d}" / "test", step, "test", tmp_path / run / f"step_{step:07d}"
            )
    entries, _ = load_statistics([tmp_path / "eval"])
    series = curve_series(entries)
    assert {k: [s for s, _ in v] for k, v in series.items()} == {"run_a/test": [100, 200], "run_b/test": [100, 200]}
    # One of the runs on another test file: the split's tables say so.
    stats_file = tmp_path / "eval" / "run_b" / "step_0000200" / "test" / "statistics.json"
    stats = json.loads(stats_file.read_text())
    stats["provenance"]["data"]["sha256"] = "cd" * 32
    stats_file.write_text(json.dumps(stats))
    entries, _ = load_statistics([tmp_path / "eval"])
    md = report.build_markdown(entries, {})
    assert "## test: results (The runs of split test were evaluated on 2 different data files" in md
