"""Skipped records are counted where a user looks (issue 28, item 7): each logged once with its
file:line in train.log, the running count in metrics.jsonl and the step line, the total at the end;
a corrupt DICOM ends in our one line, without pydicom's traceback before it."""

import json
import logging
import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from test_packing import make_mix, packer, write_text_set  # noqa: E402
from unimedvl.data.packing import MAX_SKIP_NOTES  # noqa: E402
from unimedvl.errors import DataError  # noqa: E402
from unimedvl.tokenizer import Tokenizer  # noqa: E402
from unimedvl.train.skip_log import SkipLog  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_bpe(["word " * 5, "Assessment: the CT image is noisy."], vocab_size=300)


def test_the_packer_notes_each_skip_with_its_line_and_keeps_only_the_latest(tmp_path, tokenizer):
    path = write_text_set(tmp_path, [3, 90, 3, 3, 3], bad_lines=(2,))
    mix = make_mix(tmp_path, {"text_only": {"t": (path, {})}})
    p = packer(mix, tokenizer, bad_record_policy="skip", max_num_tokens_per_sample=40)
    p.next_batch()
    notes = p.stats["skip_notes"]
    assert any(n.startswith(f"{path}:3: malformed JSON") for n in notes)
    assert any(n.startswith(f"{path}:2: ") and "tokens > max_num_tokens_per_sample=40" in n for n in notes)
    for _ in range(40):
        p.next_batch()  # many epochs: many more skips, the notes stay bounded
    assert len(p.stats["skip_notes"]) <= MAX_SKIP_NOTES and p.stats["skipped_bad_records"] > MAX_SKIP_NOTES // 2


class _Loader:
    def __init__(self):
        self.stats = {"skipped_bad_records": 0, "skipped_too_long": 0}


def test_skip_log_says_each_record_once_and_counts_in_the_metrics(caplog):
    loader = _Loader()
    skips = SkipLog(loader)
    metrics: dict = {}
    skips.update(metrics)
    assert metrics == {} and skips.summary() is None  # nothing skipped: the step line is unchanged
    loader.stats.update(skipped_bad_records=2, skip_notes=["a.jsonl:3: malformed JSON", "a.jsonl:7: no image"])
    with caplog.at_level(logging.WARNING, logger="unimedvl.train"):
        skips.update(metrics)
        loader.stats.update(
            skipped_bad_records=3,
            skipped_too_long=1,
            skip_notes=["a.jsonl:3: malformed JSON", "a.jsonl:7: no image", "a.jsonl:9: 900 tokens"],
        )
        skips.update(metrics)
    said = [r.getMessage() for r in caplog.records]
    assert said == ["skipped a.jsonl:3: malformed JSON", "skipped a.jsonl:7: no image", "skipped a.jsonl:9: 900 tokens"]
    assert metrics == {"skipped_bad_records": 3.0, "skipped_too_long": 1.0}
    assert skips.summary().startswith("4 record(s) skipped in this run (3 bad, 1 longer than")


def test_a_training_run_names_every_skipped_record_and_counts_them(tmp_path):
    from unimedvl.train.config import TrainConfig
    from unimedvl.train.trainer import Trainer

    ckpt = ts.debug_checkpoint(tmp_path / "ckpt")
    bad = (1, 4, 6, 9, 11, 13, 16)  # 7 of 17, as in the drill of the issue
    path = write_text_set(tmp_path, [3] * 17, bad_lines=bad)
    (tmp_path / "info.yaml").write_text(yaml.safe_dump({"text_only": {"t": {"jsonl_path": str(path)}}}))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"text_only": {"dataset_names": ["t"]}}))
    cfg = TrainConfig(
        model_path=str(ckpt),
        dataset_config_file=str(tmp_path / "mix.yaml"),
        dataset_info_file=str(tmp_path / "info.yaml"),
        checkpoint_dir=str(tmp_path / "run"),
        total_steps=5,
        save_every=1000,
        warmup_steps=0,
        visual_gen=False,
        visual_und=False,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        log_every=1,
        ema=0,
        expected_num_tokens=64,
        max_num_tokens=96,
        max_num_tokens_per_sample=96,
        num_workers=0,
        bad_record_policy="skip",
    )
    Trainer(cfg).train()
    log_text = (tmp_path / "run" / "train.log").read_text()
    for line in bad:
        assert log_text.count(f"skipped {path}:{line + 1}: malformed JSON") == 1
    metrics = [json.loads(m) for m in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["skipped_bad_records"] > 7  # into the second epoch: the same records, said once
    assert "skipped_bad_records=" in log_text  # the step line
    assert f"{int(metrics[-1]['skipped_bad_records'])} record(s) skipped in this run" in log_text


def test_a_corrupt_dicom_is_one_line_without_pydicom_traceback(tmp_path, capsys, caplog):
    pydicom = pytest.importorskip("pydicom")
    from unimedvl.imaging.medical_io import load_image

    source = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "SC_rgb_jpeg_dcmtk.dcm"
    data = bytearray(source.read_bytes())
    start = data.find(b"\xff\xd8")
    data[start + 2 : start + 40] = b"\x11" * 38  # the JPEG stream's header garbled, the DICOM structure intact
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(bytes(data))
    with caplog.at_level(logging.DEBUG), pytest.raises(DataError, match="cannot decode the pixel data"):
        load_image(str(corrupt))
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert "Traceback" not in capsys.readouterr().err
