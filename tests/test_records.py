"""JSONL records: both on-disk forms, image placement at <image>, ids, and error messages."""

import json
import os

import pytest

from unimedvl.data.records import ImageRef, Problem, parse_line, read_jsonl, read_jsonl_lenient
from unimedvl.errors import DataError

EDIT = {
    "main_task_type": "denoising",
    "degrade_type": "noise",
    "sample_id": "ixi_000123",
    "input_img": [{"path": "in/a.png", "height": 512, "width": 256}],
    "output_img": [{"path": "out/a.png#window=minmax", "height": 512, "width": 256}],
    "message": [
        {"from": "human", "value": "<image>\n\nRemove the noise."},
        {"from": "gpt", "value": "The image is noisy; restored: <image>"},
    ],
}


def write_jsonl(path, rows):
    """Write rows (dicts, or raw strings written as they are) one per line."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def test_medical_record_places_inputs_in_human_turns_and_outputs_in_gpt_turns(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [EDIT])
    (record,) = read_jsonl(path, data_dir="/data/ixi")
    assert record.sample_id == "ixi_000123"
    assert record.task_type == "denoising" and record.degrade_type == "noise"
    assert record.form == "medical"
    human, gpt = record.turns
    assert human.role == "human" and gpt.role == "gpt"
    assert human.images == record.input_images and gpt.images == record.output_images
    assert human.parts() == [record.input_images[0], "Remove the noise."]
    assert gpt.parts() == ["The image is noisy; restored:", record.output_images[0]]
    assert gpt.text == "The image is noisy; restored:"
    # Paths resolve against data_dir; the option fragment survives for the image reader.
    assert record.input_images[0] == ImageRef("in/a.png", "/data/ixi/in/a.png", 512, 256)
    assert record.output_images[0].path == "/data/ixi/out/a.png#window=minmax"
    assert record.source == f"{path}:1"


def test_several_images_are_taken_in_reading_order_across_turns(tmp_path):
    row = {
        "main_task_type": "multimodal_input_output",
        "input_img": [{"path": "t1.png"}, {"path": "t2.png"}, {"path": "flair.png"}],
        "output_img": [],
        "message": [
            {"from": "human", "value": "Compare <image> with <image>."},
            {"from": "gpt", "value": "They differ."},
            {"from": "human", "value": "And this one? <image>"},
            {"from": "gpt", "value": "Same lesion."},
        ],
    }
    (record,) = read_jsonl(write_jsonl(tmp_path / "a.jsonl", [row]))
    first, _, third, _ = record.turns
    assert [ref.rel_path for ref in first.images] == ["t1.png", "t2.png"]
    assert [ref.rel_path for ref in third.images] == ["flair.png"]
    assert first.texts == ("Compare ", " with ", ".")
    # Default data_dir is the folder of the JSONL file.
    assert first.images[0].path == os.path.join(str(tmp_path), "t1.png")


def test_llava_form_single_and_list_images_and_text_only(tmp_path):
    rows = [
        {
            "id": "q1",
            "image": "cxr.png",
            "conversations": [
                {"from": "human", "value": "<image>\nIs there an effusion?"},
                {"from": "gpt", "value": "No."},
            ],
        },
        {
            "image": ["a.png", "b.png"],
            "conversations": [
                {"from": "human", "value": "<image><image> Which is newer?"},
                {"from": "gpt", "value": "The second."},
            ],
        },
        {"conversations": [{"from": "human", "value": "What is MRI?"}, {"from": "gpt", "value": "Imaging."}]},
    ]
    one, two, text = read_jsonl(write_jsonl(tmp_path / "llava.jsonl", rows), data_dir="imgs")
    assert one.form == "llava" and one.sample_id == "q1" and one.task_type == "image_understanding"
    assert one.input_images[0].path == os.path.join("imgs", "cxr.png") and one.output_images == ()
    assert [r.rel_path for r in two.turns[0].images] == ["a.png", "b.png"]
    assert text.task_type == "text_only" and text.images == ()


def test_derived_sample_ids_use_file_name_and_true_line_numbers(tmp_path):
    row = dict(EDIT)
    del row["sample_id"]
    path = write_jsonl(tmp_path / "val.jsonl", [row, "", "   ", row])  # blank lines are skipped
    ids = [r.sample_id for r in read_jsonl(path)]
    assert ids == ["val.jsonl:1", "val.jsonl:4"]
    assert ids == [r.sample_id for r in read_jsonl(path)]  # stable across reads


def test_unknown_top_level_keys_are_kept(tmp_path):
    row = dict(EDIT, meta={"site": "guys"})
    (record,) = read_jsonl(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert record.extra == {"meta": {"site": "guys"}}


@pytest.mark.parametrize(
    "row, expected",
    [
        ('{"main_task_type": "x", "message": [', "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"main_task_type": "x"}, "missing 'message'"),
        (
            {"message": EDIT["message"], "input_img": EDIT["input_img"], "output_img": EDIT["output_img"]},
            "'main_task_type' must be a non-empty string",
        ),
        (dict(EDIT, input_img=[]), "1 <image> placeholder(s) in human turns but 0 input images"),
        (dict(EDIT, output_img=[]), "1 <image> placeholder(s) in gpt turns but 0 output images"),
        (dict(EDIT, input_img=EDIT["input_img"] * 2), "1 <image> placeholder(s) in human turns but 2 input"),
        (dict(EDIT, message=[{"from": "user", "value": "hi"}]), "'message'[0].from must be 'human' or 'gpt'"),
        (dict(EDIT, message=[{"from": "human", "value": 3}]), "'message'[0].value must be a string"),
        (dict(EDIT, message=[]), "'message' must be a non-empty list"),
        (dict(EDIT, input_img={"path": "a.png"}), "'input_img' must be a list"),
        (dict(EDIT, input_img=[{"height": 4}]), "'input_img'[0] needs a non-empty string 'path'"),
        (dict(EDIT, input_img=[{"path": "a.png", "height": "512"}]), "'input_img'[0].height must be a positive"),
        ({"image": 5, "conversations": [{"from": "human", "value": "<image>"}]}, "'image' must be a path"),
        (
            {"image": "a.png", "conversations": [{"from": "human", "value": "no placeholder"}]},
            "0 <image> placeholder(s) in human turns but 1 input images",
        ),
    ],
)
def test_bad_records_raise_with_path_and_line(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [EDIT, row])
    with pytest.raises(DataError) as info:
        list(read_jsonl(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: ")
    assert expected in message


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(json.dumps(EDIT).encode() + b"\n\xff\xfe{}\n")
    with pytest.raises(DataError, match=r"bin.jsonl:2: not UTF-8"):
        list(read_jsonl(path))


def test_lenient_reader_skips_bad_lines_and_collects_problems(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [EDIT, "{oops", dict(EDIT, sample_id="b"), {"x": 1}])
    problems: list[Problem] = []
    records = list(read_jsonl_lenient(path, None, problems))
    assert [r.sample_id for r in records] == ["ixi_000123", "b"]
    assert [p.line for p in problems] == [2, 4]
    assert str(problems[0]).startswith(f"{path}:2: malformed JSON")
    assert "missing 'message'" in str(problems[1])


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        list(read_jsonl(missing))
    problems: list[Problem] = []
    assert list(read_jsonl_lenient(missing, None, problems)) == []
    assert [str(p) for p in problems] == [f"{missing}: file not found"]


def test_parse_line_for_readers_that_seek(tmp_path):
    record = parse_line(json.dumps(EDIT).encode(), "/data/train.jsonl", 17)
    assert record.source == "/data/train.jsonl:17" and record.input_images[0].path == "/data/in/a.png"
    with pytest.raises(DataError, match=r"^/data/train.jsonl:17: malformed JSON"):
        parse_line("{", "/data/train.jsonl", 17)
