"""The benchmark readers on tiny folders in each publisher's layout: counts, splits, images, bad input."""

import base64
import json
from pathlib import Path

import pytest

import benchmark_fixtures as F
from unimedvl.benchmarks import get_reader
from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark, write_jsonl
from unimedvl.benchmarks.items import answer_type_of, letter_of, yes_no_rule
from unimedvl.benchmarks.reader import ReadOptions
from unimedvl.benchmarks.vlmevalkit import decode_image_entry, parse_image_cell
from unimedvl.cli import main as cli_main
from unimedvl.data.records import read_jsonl
from unimedvl.errors import ConfigError, UserError


def _convert(name, path, split=None, language="en", tmp=None, keep_failed=False):
    source = open_benchmark(name, path, split, ReadOptions(language=language))
    return convert_benchmark(
        source, image_dir=None if tmp is None else tmp / "images", out_dir=tmp, keep_failed=keep_failed
    )


def _counts(conv):
    return {f"{split}/{kind}": n for (split, kind), n in conv.counts.items()}


def test_answer_type_rules():
    assert [answer_type_of(v, "x") for v in ("CLOSED", " closed ", "Open", "yes/no", "other", "number")] == [
        "closed",
        "closed",
        "open",
        "closed",
        "open",
        "open",
    ]
    assert answer_type_of(None, "Yes.") == "closed" and answer_type_of("", "left lung") == "open"
    assert yes_no_rule("No") == "closed" and yes_no_rule("nodule") == "open" and yes_no_rule(None) == "open"
    assert letter_of("(B)", {"A": "x", "B": "y"}) == "B" and letter_of("y", {"A": "x", "B": "y"}) == "B"
    assert letter_of("z", {"A": "x", "B": "y"}) is None


def test_vqa_rad_release_test_split_by_phrase_type(tmp_path):
    root = F.vqa_rad_release(tmp_path / "rad")
    conv = _convert("vqa-rad", root)
    assert conv.source.layout == "release" and conv.source.split == "test"
    # 5 test questions: the one whose image is missing fails; " closed " and the non-yes/no "Left" are closed.
    assert _counts(conv) == {"test/closed": 3, "test/open": 1} and conv.failed == 1
    (problem,) = conv.problems
    assert str(problem).startswith(f"{root / 'VQA_RAD Dataset Public.json'}:5: ") and "synpic_missing.jpg" in str(
        problem
    )
    by_id = {r["question_id"]: r for r in conv.records}
    assert by_id["3"]["answer_type"] == "closed" and by_id["3"]["answer"] == "Left"
    assert by_id["1"]["category"] == "PRES" and by_id["1"]["groups"]["organ"] == "CHEST"
    assert by_id["1"]["sample_id"] == "vqa-rad-test-1" and by_id["1"]["paper_column"] == "VQA-RAD"
    assert _counts(_convert("vqa-rad", root, "train")) == {"train/closed": 1, "train/open": 1}
    assert sum(_convert("vqa-rad", root, "all").counts.values()) == 6


def test_hf_parquet_reads_only_that_splits_shards_and_extracts_image_bytes(tmp_path):
    root = F.vqa_rad_parquet(tmp_path / "rad_pq")
    conv = _convert("vqa-rad", root, tmp=tmp_path / "out")
    assert conv.source.layout == "parquet"
    assert _counts(conv) == {"test/closed": 2, "test/open": 1} and conv.failed == 1  # 2 shards, 4 rows, 1 broken
    assert "test-00001-of-00002" in conv.problems[0].path and conv.problems[0].line == 2
    assert "not an image" in conv.problems[0].message
    records = conv.records
    assert [r["question_id"] for r in records] == ["0", "1", "2"]  # row index within the split, across shards
    first, second = (tmp_path / "out" / r["input_img"][0]["path"] for r in records[:2])
    assert first == second and first.read_bytes() == F.image_bytes(10)  # one file per distinct image
    assert (tmp_path / "out" / records[2]["input_img"][0]["path"]).suffix == ".jpg"
    # Converting again writes nothing new and gives the same records (resume needs identical data).
    again = _convert("vqa-rad", root, tmp=tmp_path / "out")
    assert again.records == records and again.store.written == 0
    path_vqa = _convert("path-vqa", F.path_vqa_parquet(tmp_path / "pvqa"), "val")
    assert _counts(path_vqa) == {"validation/closed": 1, "validation/open": 1}


def test_slake_english_by_default_and_language_filter(tmp_path):
    root = F.slake(tmp_path)
    conv = _convert("slake", root)
    assert _counts(conv) == {"test/open": 2, "test/closed": 1}  # the 2 Chinese questions are left out
    closed = next(r for r in conv.records if r["answer_type"] == "closed")
    assert closed["answer"] == "Left" and closed["modality"] == "MRI" and closed["category"] == "Position"
    assert _counts(_convert("slake", root, language="zh")) == {"test/open": 1, "test/closed": 1}
    assert sum(_convert("slake", root, language="all").counts.values()) == 5
    assert _counts(_convert("slake", root, "validation")) == {"validate/closed": 1}  # the mirror's spelling
    assert open_benchmark("slake", root, None, ReadOptions(language="zh")).label == "slake-test-zh"
    with pytest.raises(ConfigError, match="--language"):
        ReadOptions(language="fr")


def test_omnimedvqa_options_and_gold_text(tmp_path):
    root = F.omnimedvqa(tmp_path)
    conv = _convert("omnimedvqa", root)
    assert conv.source.split == "open-access" and _counts(conv) == {"open-access/multiple_choice": 3}
    by_id = {r["question_id"]: r for r in conv.records}
    assert by_id["acrima_1"]["answer"] == "B" and by_id["acrima_1"]["options"] == {"A": "Normal", "B": "Glaucoma"}
    assert by_id["acrima_2"]["modality"] == "Fundus Photography"  # read from the 'modality' spelling too
    assert by_id["acrima_3"]["answer"] == "C" and list(by_id["acrima_3"]["options"]) == ["A", "B", "C"]
    assert (
        "Options:\nA. CT\nB. MRI\nC. Fundus\nAnswer with the option's letter"
        in by_id["acrima_3"]["message"][0]["value"]
    )
    assert conv.failed == 1 and "'Grade 9' is none of the options" in str(conv.problems[0])
    restricted = _convert("omnimedvqa", root, "restricted")
    assert restricted.failed == 1 and "not found" in str(restricted.problems[0])  # images not distributed


def test_vlmevalkit_tsv_base64_references_and_missing_options(tmp_path):
    tsv = F.vlmevalkit_tsv(tmp_path / "GMAI-MMBench_VAL.tsv")
    conv = _convert("gmai-mmbench", tsv, tmp=tmp_path / "out")
    assert conv.source.label == "gmai-mmbench-val" and conv.failed == 1  # the broken base64 row
    assert str(conv.problems[0]) == f"{tsv}:7: index 5: the image cell is not valid base64"
    by_id = {r["question_id"]: r for r in conv.records}
    assert list(by_id) == ["0", "1", "2", "3", "4"]  # file order, the forward reference included
    image = {i: by_id[i]["input_img"][0]["path"] for i in by_id}
    assert image["1"] == image["3"] != image["0"] == image["2"]  # row 1 names row 3 (forward), row 2 names row 0
    assert (tmp_path / "out" / image["0"]).read_bytes() == F.image_bytes(50, size=16)
    assert by_id["1"]["options"] == {"A": "Liver", "B": "Kidney", "C": "Spleen"}  # D, E empty: absent
    assert by_id["2"]["options"] == {"A": "Yes", "B": "No"}  # "nan" counts as absent, as pandas reads it
    assert by_id["1"]["hint"] == "Axial slice." and by_id["1"]["message"][0]["value"].startswith("<image>\nHint: Axial")
    assert by_id["4"]["answer"] is None and len(by_id["4"]["message"]) == 1 and conv.unanswered == 1
    assert by_id["0"]["groups"]["department"] == "Radiology" and by_id["0"]["split"] == "VAL"
    assert _counts(_convert("vlmevalkit", tsv, "TEST")) == {"TEST/multiple_choice": 1}


def test_vlmevalkit_image_cells():
    data = F.image_bytes(7)
    assert decode_image_entry(base64.b64encode(data).decode()).data == data
    assert decode_image_entry("12").ref == "12"
    assert parse_image_cell("['a', 'b']") == ["a", "b"] and parse_image_cell("[not a list") == ["[not a list"]
    with pytest.raises(ValueError, match="not valid base64"):
        decode_image_entry("!" * 100)


def test_reference_to_a_missing_row_is_a_counted_failure(tmp_path):
    tsv = F.vlmevalkit_tsv(tmp_path / "x.tsv", broken_row=False)
    text = tsv.read_text().replace("\n2\t0\t", "\n2\t99\t")
    tsv.write_text(text)
    conv = _convert("vlmevalkit", tsv, keep_failed=True)
    assert conv.failed == 1 and "refers to index 99" in str(conv.problems[0])
    unusable = [r for r in conv.records if "unusable" in r]
    assert [r["sample_id"] for r in unusable] == ["vlmevalkit-VAL-2"]


def test_llava_med_json_and_dataset_column(tmp_path):
    test_json = F.llava_med(tmp_path)
    conv = _convert("llava-med", test_json)
    assert _counts(conv) == {"test/closed": 2, "test/open": 1}  # 'conversatons' read; 'yes/no' is closed
    assert conv.records[1]["question"] == "What organ?" and conv.records[0]["paper_column"] == "VQA-RAD"
    assert conv.source.label == "llava-med-test"
    other = test_json.with_name("test_w_options.json")  # a file is its own split, whatever its name
    other.write_text(test_json.read_text())
    assert _convert("llava-med", other).source.label == "llava-med-test_w_options"


def test_other_layout_is_one_clear_error(tmp_path):
    root = F.omnimedvqa(tmp_path / "omni")
    with pytest.raises(UserError, match=r"not a slake layout: expected .*found OmniMedVQA/; it looks like omnimedvqa"):
        open_benchmark("slake", root)
    with pytest.raises(UserError, match="no split 'dev'.*splits here: test, train"):
        open_benchmark("vqa-rad", F.vqa_rad_release(tmp_path / "rad"), "dev")
    with pytest.raises(ConfigError, match="choose one of vqa-rad, slake"):
        get_reader("mimic")
    # A SLAKE folder whose split file holds another format: one whole-file problem, not one per row.
    (tmp_path / "fake" / "imgs").mkdir(parents=True)
    (tmp_path / "fake" / "test.json").write_text(json.dumps([{"id": 1, "conversations": []}] * 5))
    conv = _convert("slake", tmp_path / "fake")
    assert len(conv.problems) == 1 and conv.problems[0].line is None and "not a SLAKE file" in str(conv.problems[0])


def test_convert_cli_writes_trainable_records_and_validate_reports(tmp_path, capsys):
    root = F.vqa_rad_parquet(tmp_path / "rad")
    out = tmp_path / "conv" / "vqa_rad_test.jsonl"
    assert cli_main(["convert", "--benchmark", "vqa-rad", str(root), "--out", str(out)]) == 1  # one broken row
    printed = capsys.readouterr()
    assert "test: 3 (closed 2, open 1)" in printed.out and "wrote 3 record(s)" in printed.out
    assert "parquet:2: vqa-rad question 3" in printed.err
    records = list(read_jsonl(out))  # our JSONL reader takes them (images beside it, in vqa_rad_test_images/)
    assert len(records) == 3 and all(Path(r.input_images[0].path).is_file() for r in records)
    assert records[0].turns[1].text == "yes" and records[0].extra["answer_type"] == "closed"
    first = out.read_bytes()
    cli_main(["convert", "--benchmark", "vqa-rad", str(root), "--out", str(out)])
    assert out.read_bytes() == first  # deterministic and idempotent
    assert cli_main(["validate-data", "--benchmark", "vqa-rad", str(root)]) == 1
    printed = capsys.readouterr().out
    assert "test: 3 (closed 2, open 1)" in printed and "train: 1 (closed 1)" in printed and "problems: 1" in printed
    assert cli_main(["validate-data", "--benchmark", "slake", str(F.slake(tmp_path / "slake"))]) == 0
    assert "test: 3 (closed 1, open 2)" in capsys.readouterr().out


def test_write_jsonl_round_trip(tmp_path):
    conv = _convert("slake", F.slake(tmp_path))
    write_jsonl(conv.records, tmp_path / "s.jsonl")
    assert [r.sample_id for r in read_jsonl(tmp_path / "s.jsonl")] == ["slake-test-1", "slake-test-2", "slake-test-3"]
