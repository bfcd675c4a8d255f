"""Benchmarks as researchers' downloads arrive: HF caches and save_to_disk, imgs.zip, pvqa pickles, nested folders."""

import pickle
import shutil

import pytest

import benchmark_fixtures as F
from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark
from unimedvl.benchmarks.pvqa_release import load_plain_pickle
from unimedvl.benchmarks.reader import ReadOptions
from unimedvl.cli import main as cli_main
from unimedvl.errors import DataError, UserError

ROWS = {
    "test": [
        (F.image_bytes(10), "is there a fracture?", "yes"),
        (F.image_bytes(20), "where?", "left femur"),
        (F.image_bytes(30), "is the heart enlarged?", "no"),
    ],
    "train": [(F.image_bytes(40), "is this an mri?", "no")],
}


def _read(name, path, split=None, tmp=None, options=None):
    source = open_benchmark(name, path, split, options or ReadOptions())
    return source, convert_benchmark(source, image_dir=None if tmp is None else tmp / "img", out_dir=tmp)


def _questions(conv):
    return [r["question"] for r in conv.records]


@pytest.mark.parametrize("layout", ["arrow_cache", "save_to_disk", "hub_cache"])
def test_hugging_face_downloads_are_read_with_pyarrow(tmp_path, layout):
    if layout == "arrow_cache":  # load_dataset("flaviagiammarino/vqa-rad", cache_dir=...): the newest hash folder
        path = F.hf_arrow_cache(tmp_path / "cache", "flaviagiammarino/vqa-rad", ROWS)
    elif layout == "save_to_disk":
        path = F.hf_save_to_disk(tmp_path / "vqa_rad_disk", ROWS)
    else:  # the hub cache folder: refs/main's snapshot, not the older one
        path = F.hf_hub_cache(tmp_path / "hub", "flaviagiammarino/vqa-rad", ROWS)
    source, conv = _read("vqa-rad", path, tmp=tmp_path)
    assert source.split == "test" and not conv.problems
    assert _questions(conv) == ["is there a fracture?", "where?", "is the heart enlarged?"]
    assert [r["answer_type"] for r in conv.records] == ["closed", "open", "closed"]
    assert source.reader.splits(path, source.layout) == ["test", "train"]
    _, train = _read("path-vqa", path, "train")
    assert _questions(train) == ["is this an mri?"]


def test_a_save_to_disk_folder_of_another_benchmark_gets_the_right_hint(tmp_path):
    folder = F.hf_save_to_disk(tmp_path / "disk", ROWS)
    with pytest.raises(UserError) as err:
        open_benchmark("slake", folder)
    assert "llava-med" not in str(err.value) and "use --benchmark vqa-rad" in str(err.value)


def test_slake_images_are_read_from_imgs_zip_in_place(tmp_path):
    root = F.slake_zipped(tmp_path / "slake")
    assert not (root / "Slake1.0" / "imgs").exists()
    _, conv = _read("slake", root, tmp=tmp_path)
    assert len(conv.records) == 3 and not conv.problems
    image = tmp_path / conv.records[0]["input_img"][0]["path"]
    assert image.is_file() and image.read_bytes()[:2] == b"\xff\xd8"  # the JPEG from the archive, extracted once


def test_vqa_rad_release_one_level_down(tmp_path):
    F.vqa_rad_release(tmp_path / "download" / "osfstorage-archive")
    source, conv = _read("vqa-rad", tmp_path / "download")
    assert source.layout == "release" and len(conv.records) == 4  # 5 test questions, one image missing


def test_original_pathvqa_release_reads_pickles_without_unpickling_objects(tmp_path):
    root = F.pvqa_release(tmp_path / "download")
    source, conv = _read("path-vqa", root)
    assert source.layout == "release" and source.split == "test"
    assert _questions(conv) == ["Is there necrosis?", "Is there necrosis?", "What organ is this?"]
    assert [r["answer"] for r in conv.records][-1] == "Kidney" and not conv.problems  # case kept, repeats kept
    _, val = _read("path-vqa", root, "validation")  # the HF copy's name for the release's "val"
    assert _questions(val) == ["q?"]

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "download"),))

    bad = root / "pvqa" / "qas" / "test" / "test_qa.pkl"
    bad.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataError, match=r"test_qa.pkl: not a plain-data question pickle \(refusing to load shutil"):
        load_plain_pickle(bad)
    _, conv = _read("path-vqa", root)
    assert conv.problems and (root / "pvqa").is_dir()  # reported, and nothing was run


def test_omnimedvqa_validates_the_splits_present_and_finds_restricted_images_under_data_dir(tmp_path, capsys):
    root = F.omnimedvqa(tmp_path / "omni")
    shutil.rmtree(root / "OmniMedVQA" / "QA_information" / "Open-access")
    F._image(tmp_path / "originals" / "Images" / "Private" / "x.png", 70)
    assert (
        cli_main(["validate-data", "--benchmark", "omnimedvqa", str(root), "--data-dir", str(tmp_path / "originals")])
        == 0
    )
    out = capsys.readouterr().out
    assert "restricted-access: 1" in out and "splits read: restricted-access" in out
    source, conv = _read("omnimedvqa", root)  # the only access folder present is the default
    assert source.split == "restricted-access" and conv.failed == 1  # its image is in the original datasets


def test_an_lmudata_folder_with_local_copies_is_read_once(tmp_path):
    tsv = F.vlmevalkit_tsv(tmp_path / "LMUData" / "GMAI-MMBench_VAL.tsv", broken_row=False)
    shutil.copy(tsv, tmp_path / "LMUData" / "GMAI-MMBench_VAL_local.tsv")
    _, conv = _read("gmai-mmbench", tmp_path / "LMUData")
    assert len(conv.records) == 5


def test_counts_are_checked_against_the_published_ones_and_files_checksummed(tmp_path, capsys):
    from unimedvl.benchmarks.published import count_warning, published_count

    assert published_count("path-vqa", "parquet", "test", "en") == (6719, "flaviagiammarino/path-vqa")
    assert published_count("path-vqa", "release", "test", "en")[0] == 6761
    assert published_count("slake", "release", "test", "zh") is None  # only the English count is published
    assert count_warning("vqa-rad", "parquet", "test", "en", 451) is None
    root = F.vqa_rad_release(tmp_path / "rad")
    assert cli_main(["validate-data", "--benchmark", "vqa-rad", str(root), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "warning: 5 question(s) in vqa-rad test, but the OSF release and the HF copy has 451" in out
    import hashlib

    digest = hashlib.md5((root / "VQA_RAD Dataset Public.json").read_bytes()).hexdigest()
    assert f"md5 {digest}" in out and "VQA_RAD Dataset Public.json" in out
