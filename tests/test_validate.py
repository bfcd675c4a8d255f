"""Dataset validation: counts, size ranges, problems as path:line: message, and the CLI subcommand."""

import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from unimedvl.commands import validate_data
from unimedvl.data.validate import validate_jsonl, validate_sources
from unimedvl.errors import UserError
from unimedvl.imaging.transforms import ImageTransform


def write_jsonl(path, rows):
    with open(path, "w") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def edit(sample_id, src, dst, src_size=(64, 48), dst_size=(64, 48), task="denoising"):
    return {
        "main_task_type": task,
        "sample_id": sample_id,
        "input_img": [{"path": src, "width": src_size[0], "height": src_size[1]}],
        "output_img": [{"path": dst, "width": dst_size[0], "height": dst_size[1]}],
        "message": [{"from": "human", "value": "<image>\nDenoise."}, {"from": "gpt", "value": "<image>"}],
    }


def vqa(sample_id, image):
    return {
        "id": sample_id,
        "image": image,
        "conversations": [{"from": "human", "value": "<image> Normal?"}, {"from": "gpt", "value": "Yes."}],
    }


@pytest.fixture
def dataset(tmp_path):
    """A data_dir with two PNGs and a .npy, and a JSONL beside it in another folder."""
    data_dir = tmp_path / "images"
    data_dir.mkdir()
    Image.new("L", (64, 48)).save(data_dir / "noisy.png")
    Image.new("L", (64, 48)).save(data_dir / "clean.png")
    Image.new("RGB", (300, 120)).save(data_dir / "wide.png")
    np.save(data_dir / "t1.npy", np.zeros((32, 40), dtype=np.float32))
    return tmp_path, data_dir


def test_clean_file_reports_counts_and_ranges(dataset):
    root, data_dir = dataset
    path = write_jsonl(
        root / "train.jsonl",
        [
            edit("a", "noisy.png", "clean.png"),
            edit("b", "t1.npy", "clean.png", src_size=(40, 32)),
            vqa("c", "wide.png"),
        ],
    )
    report = validate_jsonl(path, data_dir)
    assert report.ok and report.problems == []
    assert report.records == 3 and report.bad_records == 0
    assert report.task_counts == {"denoising": 2, "image_understanding": 1}
    inputs = report.image_sizes["input"]
    assert (inputs.count, inputs.min_width, inputs.max_width) == (3, 40, 300)
    assert (inputs.min_height, inputs.max_height) == (32, 120)
    assert report.image_sizes["output"].count == 2
    assert "no problems found" in report.format()


def test_problems_are_listed_with_path_and_line_in_order(dataset):
    root, data_dir = dataset
    path = write_jsonl(
        root / "train.jsonl",
        [
            edit("a", "noisy.png", "clean.png"),  # 1 fine
            '{"main_task_type": "denoising", "message": [',  # 2 malformed JSON
            {"main_task_type": "x"},  # 3 missing message
            edit("d", "missing.png", "clean.png"),  # 4 image file missing
            vqa("e", ["noisy.png", "clean.png"]),  # 5 two images, one placeholder
            edit("f", "noisy.png", "clean.png", dst_size=(512, 512)),  # 6 declared size is wrong
            edit("a", "noisy.png", "clean.png"),  # 7 duplicate sample id
            "",  # blank line: ignored
            edit("h", "noisy.png", "clean.png"),  # 9 fine
        ],
    )
    report = validate_jsonl(path, data_dir)
    assert not report.ok
    assert [p.line for p in report.problems] == [2, 3, 4, 5, 6, 7]
    text = [str(p) for p in report.problems]
    assert text[0].startswith(f"{path}:2: malformed JSON")
    assert "missing 'message'" in text[1]
    assert text[2].startswith(f"{path}:4: input image 1 (missing.png): ") and "file not found" in text[2]
    assert "1 <image> placeholder(s) in human turns but 2 input images" in text[3]
    assert "record says 512x512 (width x height) but the file is 64x48" in text[4]
    assert f"repeats the one at {path}:1" in text[5]
    assert report.records == 5 and report.bad_records == 3  # parsed vs unparsable lines
    printed = report.format()
    assert f"{path}:4: input image 1 (missing.png)" in printed and "problems: 6" in printed


def test_every_fault_of_a_record_is_reported_in_one_run(dataset):
    root, data_dir = dataset
    five = {
        "main_task_type": "image_understading",
        "sample_id": 3.5,
        "input_imgs": [],
        "input_img": [{"path": "missing.png", "width": "64"}],
        "message": [{"from": "human", "value": "<image> What is this?"}, {"from": "gpt", "value": 7}],
    }
    llava_in_medical = dict(edit("b", "noisy.png", "clean.png"), image="noisy.png")
    path = write_jsonl(root / "train.jsonl", [five, llava_in_medical, edit("c", "gone.png", "gone2.png")])
    report = validate_jsonl(path, data_dir)
    by_line = {}
    for p in report.problems:
        by_line.setdefault(p.line, []).append(p.message)
    first = by_line[1]
    assert "unknown key 'input_imgs': did you mean 'input_img'?" in first
    assert "unknown main_task_type 'image_understading': did you mean 'image_understanding'?" in first
    assert "'input_img'[0].width must be a positive integer, got '64'" in first
    assert "'message'[1].value must be a string, got int" in first
    assert "'sample_id' must be a string or an integer, got 3.5" in first
    assert any(m.startswith("input image 1 (missing.png): ") and "file not found" in m for m in first)
    assert len(first) == 6
    assert by_line[2] == [
        "key 'image' belongs to the LLaVA form, not to this medical record; use the medical "
        "form's keys (degrade_type, input_img, main_task_type, message, output_img, sample_id)"
    ]
    assert len(by_line[3]) == 2  # both images missing, one run
    assert report.records == 2 and report.bad_records == 1


def test_a_new_task_type_or_extra_metadata_is_no_problem(dataset):
    root, data_dir = dataset
    row = dict(
        edit("a", "noisy.png", "clean.png", task="metal_artifact_reduction"),
        question_type="open",
        source_dataset="in-house",
    )
    report = validate_jsonl(write_jsonl(root / "train.jsonl", [row]), data_dir)
    assert report.ok and report.task_counts == {"metal_artifact_reduction": 1}


def test_problems_are_capped_per_file_with_a_count_of_the_rest(dataset):
    root, data_dir = dataset
    many = write_jsonl(root / "many.jsonl", [edit(str(i), "missing.png", "clean.png") for i in range(7)])
    few = write_jsonl(root / "few.jsonl", [edit("x", "missing.png", "clean.png")])
    text = validate_sources([(many, data_dir), (few, data_dir)]).format(max_problems=3)
    assert "problems: 8" in text and f"... and 4 more in {many} (--max-problems 0 lists all)" in text
    assert f"{few}:1: input image 1 (missing.png)" in text  # the second file is not hidden by the first


def test_sizes_beyond_position_tables_are_reported(dataset):
    root, data_dir = dataset
    path = write_jsonl(root / "train.jsonl", [vqa("w", "wide.png")])  # 300 x 120
    vae = ImageTransform(image_stride=16, max_image_size=1024, min_image_size=512)
    vit = ImageTransform(image_stride=14, max_image_size=980, min_image_size=378)
    fits = validate_jsonl(path, data_dir, vae, vit, max_latent_side=64, max_vit_side=70)
    assert fits.ok
    assert fits.grid_sizes["vae"].max_width == 64  # 300x120 -> 1024x416 -> 64 latent tokens wide
    report = validate_jsonl(path, data_dir, vae, vit, max_latent_side=32, max_vit_side=70)
    (problem,) = report.problems
    assert str(problem).startswith(f"{path}:1: input image 1 (wide.png): 300x120 becomes 1024x416")
    assert "beyond max_latent_size=32" in str(problem) and "lower max_image_size to <= 512" in str(problem)
    with pytest.raises(UserError, match="without the vit transform"):
        validate_jsonl(path, data_dir, max_vit_side=70)


def test_medical_formats_are_checked_from_headers(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    ct = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    if not os.path.isfile(ct):
        pytest.skip("CT_small.dcm not bundled")
    path = write_jsonl(
        tmp_path / "ct.jsonl",
        [
            vqa("ok", f"{ct}#window=lung"),
            vqa("bad-window", f"{ct}#window=lungs"),
            vqa("bad-frame", f"{ct}#frame=3"),
        ],
    )
    report = validate_jsonl(path)
    assert report.image_sizes["input"].max_width == 128
    assert [p.line for p in report.problems] == [2, 3]
    assert "window='lungs' is unknown" in str(report.problems[0])
    assert "frame=3 but the file has 1 frame" in str(report.problems[1])


def test_decode_finds_truncated_pixel_data(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    truncated = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "MR_truncated.dcm")
    if not os.path.isfile(truncated):
        pytest.skip("MR_truncated.dcm not bundled")
    path = write_jsonl(tmp_path / "mr.jsonl", [vqa("t", truncated)])
    assert validate_jsonl(path).ok  # the header alone looks fine
    (problem,) = validate_jsonl(path, decode=True).problems
    assert "MR_truncated.dcm: cannot decode the pixel data" in str(problem)


def test_several_sources_and_whole_file_problems(dataset):
    root, data_dir = dataset
    one = write_jsonl(root / "one.jsonl", [edit("a", "noisy.png", "clean.png")])
    empty = write_jsonl(root / "empty.jsonl", [])
    report = validate_sources([(one, data_dir), (empty, data_dir), (root / "gone.jsonl", data_dir)])
    assert report.files == [str(one), str(empty), str(root / "gone.jsonl")]
    assert [str(p) for p in report.problems] == [
        f"{empty}: no records (the file is empty)",
        f"{root / 'gone.jsonl'}: file not found",
    ]


def cli(argv):
    parser = argparse.ArgumentParser(prog="unimedvl")
    validate_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_status_and_output(dataset, capsys):
    root, data_dir = dataset
    good = write_jsonl(root / "good.jsonl", [edit("a", "noisy.png", "clean.png"), vqa("b", "wide.png")])
    assert cli(["validate-data", str(good), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "records: 2 read, 0 lines unreadable" in out and "denoising: 1" in out and "no problems found" in out
    assert "input images: 2 image(s), width 64..300, height 48..120" in out
    bad = write_jsonl(root / "bad.jsonl", [edit("a", "missing.png", "clean.png")])
    assert cli(["validate-data", str(bad), "--data-dir", str(data_dir), "--model", "debug"]) == 1
    assert f"{bad}:1: input image 1 (missing.png)" in capsys.readouterr().out
    # The debug model's latent table is 32 per side: a 1024-pixel VAE max does not fit.
    assert cli(["validate-data", str(good), "--data-dir", str(data_dir), "--model", "debug"]) == 1
    assert "beyond max_latent_size=32" in capsys.readouterr().out
    assert (
        cli(
            [
                "validate-data",
                str(good),
                "--data-dir",
                str(data_dir),
                "--model",
                "debug",
                "--vae-max-size",
                "512",
                "--vae-min-size",
                "256",
                "--vit-max-size",
                "448",
                "--vit-min-size",
                "224",
            ]
        )
        == 0
    )


def test_cli_mix_form_reports_a_missing_mix(tmp_path, capsys):
    from unimedvl.cli import main

    status = main(["validate-data", str(tmp_path / "mix.yaml"), "--dataset-info", str(tmp_path / "info.yaml")])
    assert status in (1, 2)
    captured = capsys.readouterr()
    assert "mix.yaml: file not found" in captured.out + captured.err


def test_the_readme_records_are_valid_and_its_task_table_is_complete():
    from pathlib import Path

    from unimedvl.data.record_checks import TASK_TYPES, record_problems

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Data formats", 1)[1].split("\n## ", 1)[0]
    decoder, records = json.JSONDecoder(), []
    for block in section.split("```json")[1:]:
        text, at = block.split("```", 1)[0], 0
        while text[at:].strip():
            at += len(text[at:]) - len(text[at:].lstrip())
            obj, at = decoder.raw_decode(text, at)
            records.append(obj)
    kinds = {r["main_task_type"] for r in records}
    assert {"image_understanding", "report_generation", "text_to_image", "denoising"} <= kinds
    assert all(record_problems(r) == [] for r in records)
    for task in TASK_TYPES:
        assert f"`{task}`" in section, f"README's task table misses {task}"
