"""Hostile and unlucky inputs: decompression bombs, huge texts, BOMs, paths outside the data folder.

Each case must end in one DataError line that names the file and what to do, never a traceback,
and (in batch evaluation) cost only its own sample. The end-to-end drills through the commands are
in tests/test_drills.py (``make drill``).
"""

import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import drill_support as ds  # noqa: E402
from unimedvl.data.records import outside_data_dir, parse_line, read_jsonl  # noqa: E402
from unimedvl.data.validate import TokenLimit, validate_jsonl  # noqa: E402
from unimedvl.errors import DataError  # noqa: E402
from unimedvl.imaging.medical_io import image_size, load_array, load_image  # noqa: E402
from unimedvl.tokenizer import Tokenizer  # noqa: E402


def _record(sample_id, image, question="<image>\nWhat is shown?", **extra):
    return {
        "main_task_type": "image_understanding",
        "sample_id": sample_id,
        "input_img": [{"path": image}],
        "message": [{"from": "human", "value": question}, {"from": "gpt", "value": "a CT"}],
        **extra,
    }


# --------------------------------------------------------------------------------------------- pixels


@pytest.mark.parametrize("reader", [image_size, load_array, load_image])
def test_a_png_bomb_is_refused_from_its_header(tmp_path, reader):
    bomb = ds.png_bomb(tmp_path / "bomb.png", 20000, 20000, rows=2)  # header says 400 MP; nothing decoded
    with pytest.raises(
        DataError,
        match=r"bomb.png: image is 20000x20000 = 400,000,000 pixels, over the default "
        r"limit of 16384 x 16384.*--max-image-pixels",
    ):
        reader(bomb)


def test_the_limit_can_be_raised_past_pils_own_guard_and_pil_is_left_as_it_was(tmp_path):
    pil_guard = Image.MAX_IMAGE_PIXELS
    big = ds.png_bomb(tmp_path / "big.png", 15000, 15000, rows=2)  # 225 MP: PIL alone refuses (> 179 MP)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(big)
    assert image_size(big) == (15000, 15000)  # within our default
    with pytest.raises(DataError, match="over the limit of 1,000,000 pixels"):
        image_size(big, max_image_pixels=10**6)
    assert Image.MAX_IMAGE_PIXELS == pil_guard
    with pytest.raises(DataError, match="must be a positive number"):
        image_size(big, max_image_pixels=0)


def test_dicom_nifti_and_npy_are_checked_from_their_headers(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    nib = pytest.importorskip("nibabel")
    from pydicom.data import get_testdata_file

    ds_ = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds_.Rows = ds_.Columns = 30000  # the pixel data stay 128 x 128: only the header claims the size
    dcm = tmp_path / "huge.dcm"
    ds_.save_as(dcm)
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 3))
    header.set_data_dtype(np.uint8)
    nii = tmp_path / "huge.nii"
    with nii.open("wb") as handle:  # a header and no voxels: reading any slice would fail
        header.write_to(handle)
        handle.write(b"\0" * (int(header["vox_offset"]) - handle.tell()))
    npy = tmp_path / "huge.npy"
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.uint8, shape=(30000, 30000))  # sparse on disk
    for path in (dcm, nii, npy):
        for reader in (image_size, load_array):
            with pytest.raises(DataError, match=r"30000x30000 = 900,000,000 pixels"):
                reader(path)


def test_reduced_decode_keeps_three_times_the_target_and_small_images_exact(tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(photo, quality=90)
    reduced = load_image(photo, reduce_to=(100, 75))
    assert reduced.size == (400, 300)  # JPEG draft at 1/4: the largest scale still >= 3 x the target
    png = tmp_path / "scan.png"
    Image.fromarray(rng.integers(0, 255, (1000, 1000), dtype=np.uint8)).save(png)
    assert load_image(png, reduce_to=(64, 64)).size == (200, 200)  # reduce(5): 1000 / 64 / 3 -> 5
    full = np.asarray(load_image(png))
    near = np.asarray(load_image(png, reduce_to=(400, 400)))  # under 3 x the target: not reduced at all
    np.testing.assert_array_equal(full, near)


# --------------------------------------------------------------------------------------------- text


@pytest.fixture(scope="module")
def qwen():
    return Tokenizer.offline_qwen()


def test_the_token_lower_bound_never_exceeds_the_count(qwen):
    small = Tokenizer.train_bpe(["the patient has a small nodule in the left lung"] * 8, vocab_size=300)
    rng = random.Random(0)
    alphabet = "ab cé\u0301한\u1100\u1161\u11a8  \n\t-.,0123😀<|im_start|>"  # NFC merges, specials, emoji
    for tokenizer in (qwen, small):
        for _ in range(300):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
            assert tokenizer.min_tokens(text) <= len(tokenizer.encode(text))
    assert qwen.max_token_bytes == 128  # Qwen2's longest entry: 128 spaces
    huge = ds.huge_text(10)
    assert qwen.tokens_exceed(huge, 16384) and not qwen.tokens_exceed("short", 16384)


def test_validate_reports_long_texts_and_bombs_and_warns_about_outside_images(tmp_path, qwen):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (64, 64)).save(data / "ok.png")
    ds.png_bomb(data / "bomb.png", 20000, 20000, rows=2)
    Image.new("RGB", (64, 64)).save(tmp_path / "outside.png")
    (data / "link.png").symlink_to(tmp_path / "outside.png")
    records = [
        _record("bomb", "bomb.png"),
        _record("long", "ok.png", "<image>\n" + ds.huge_text(10)),
        _record("dots", "../outside.png"),
        _record("abs", str(tmp_path / "outside.png")),
        _record("link", "link.png"),
        _record("fine", "ok.png"),
    ]
    path = data / "test.jsonl"
    path.write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")  # with a BOM
    tokens = TokenLimit(qwen, 16384, "max_num_tokens_per_sample=16384")
    report = validate_jsonl(path, tokens=tokens)
    problems = {p.line: p.message for p in report.problems}
    assert report.records == 6 and set(problems) == {1, 2}
    assert "20000x20000" in problems[1] and "at least" in problems[2] and "16384" in problems[2]
    assert [w.line for w in report.warnings] == [3, 4, 5]
    confined = validate_jsonl(path, tokens=tokens, confine_data_dir=True)
    assert sorted(p.line for p in confined.problems) == [1, 2, 3, 4, 5]


def test_a_byte_order_mark_is_read_not_rejected(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    line = json.dumps(_record("first", "x.png"))
    assert parse_line(b"\xef\xbb\xbf" + line.encode(), tmp_path / "t.jsonl", 1).sample_id == "first"
    assert parse_line("\ufeff" + line, tmp_path / "t.jsonl", 1).sample_id == "first"
    (tmp_path / "t.jsonl").write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n" + line.replace("first", "2").encode())
    assert [r.sample_id for r in read_jsonl(tmp_path / "t.jsonl")] == ["first", "2"]


def test_outside_data_dir_sees_through_dots_absolute_paths_and_symlinks(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.png").write_bytes(b"")
    (tmp_path / "data" / "link").symlink_to(tmp_path)
    inside = str(tmp_path / "data")
    assert not outside_data_dir(str(tmp_path / "data" / "in.png#window=lung"), inside)
    assert outside_data_dir(str(tmp_path / "data" / ".." / "x.png"), inside)
    assert outside_data_dir("/etc/passwd", inside)
    assert outside_data_dir(str(tmp_path / "data" / "link" / "x.png"), inside)


def _mix_with_long_texts(tmp_path):
    """A vlm_sft mix of 2 records with 2 MB questions, then 4 short ones."""
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    long = [_record(f"long{i}", "ok.png", "<image>\n" + ds.huge_text(2)) for i in range(2)]
    short = [_record(f"short{i}", "ok.png") for i in range(4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long + short))
    (tmp_path / "info.yaml").write_text(f"vlm_sft:\n  med:\n    jsonl_path: {tmp_path / 'train.jsonl'}\n")
    (tmp_path / "mix.yaml").write_text(
        "vlm_sft:\n  dataset_names: [med]\n  vit_image_transform_args: {image_stride: 14, max_image_size: 56, "
        "min_image_size: 28}\n  num_used_data: [0]\n  shuffle_lines: false\n"
    )
    return tmp_path / "mix.yaml", tmp_path / "info.yaml"


def test_validate_counts_a_mix_sample_as_the_packer_does(tmp_path):
    from unimedvl.checkpoint.create import default_tokenizer
    from unimedvl.config import model_config
    from unimedvl.data.validate import validate_mix

    mix, info = _mix_with_long_texts(tmp_path)
    cfg = model_config("debug")
    tokens = TokenLimit(default_tokenizer(cfg), 256, "max_num_tokens_per_sample=256")
    report = validate_mix(mix, info, cfg, tokens=tokens)
    assert [p.line for p in report.problems] == [1, 2]
    assert all("the sample is at least" in p.message and "(text and images)" in p.message for p in report.problems)
    # A short sample: its 28 x 28 image (2 x 2 patches + 2 markers) and its two texts (<|im_start|> ids
    # <|im_end|>), as the packer counts it.
    image, texts = 2 * 2 + 2, sum(2 + len(tokens.tokenizer.encode(t)) for t in ("What is shown?", "a CT"))
    exact = validate_mix(mix, info, cfg, tokens=TokenLimit(tokens.tokenizer, image + texts, "limit"))
    over = validate_mix(mix, info, cfg, tokens=TokenLimit(tokens.tokenizer, image + texts - 1, "limit"))
    assert len(exact.problems) == 2 and len(over.problems) == 6


def test_the_packer_skips_a_huge_sample_without_tokenising_it_and_says_so_once(tmp_path, caplog, monkeypatch):
    from unimedvl.checkpoint.create import default_tokenizer
    from unimedvl.config import model_config
    from unimedvl.data.config import DataConfig
    from unimedvl.data.mixing import load_mix
    from unimedvl.data.packing import Packer

    _mix_with_long_texts(tmp_path)
    cfg = model_config("debug")
    tokenizer = default_tokenizer(cfg)
    encode = tokenizer.encode

    def guarded(text):
        assert len(text) < 100_000, "a 2 MB text was tokenised"
        return encode(text)

    monkeypatch.setattr(tokenizer, "encode", guarded)
    data = DataConfig(
        str(tmp_path / "mix.yaml"),
        str(tmp_path / "info.yaml"),
        expected_num_tokens=64,
        max_num_tokens=256,
        max_num_tokens_per_sample=256,
    )
    packer = Packer(load_mix(data.dataset_config_file, data.dataset_info_file, cfg), cfg, tokenizer, data)
    with caplog.at_level(logging.WARNING, logger="unimedvl.data"):
        for _ in range(3):
            packer.next_batch()
    assert packer.stats["skipped_too_long"] >= 2
    notices = [r.message for r in caplog.records if "skipped" in r.message]
    assert len(notices) == 1 and "train.jsonl:1" in notices[0] and "at least" in notices[0]
