"""MedSynth (synthetic benchmark) and the real-image evaluation set: format, determinism, ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unimedvl.commands import synth as synth_cli
from unimedvl.errors import ConfigError, DataError
from unimedvl.medsynth import degradations as degrade
from unimedvl.medsynth import generator as syn
from unimedvl.medsynth import images as si
from unimedvl.medsynth import real_set as real_samples

SIZE = 64
RESTORATION = {"denoising", "deblurring", "super_resolution", "motion_correction", "stain_translation"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _img(root: Path, ref: dict) -> np.ndarray:
    return np.asarray(Image.open(root / ref["path"]))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".png", ".jsonl")
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("medsynth")
    syn.generate_medsynth(out, n_train=45, n_test=9, seed=3, image_size=SIZE)
    return out


@pytest.fixture(scope="module")
def records(bench) -> list[dict]:
    return _records(bench / "train.jsonl") + _records(bench / "test.jsonl")


def _by_task(records, task):
    return [r for r in records if r["main_task_type"] == task]


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_files_and_another_seed_differs(bench, tmp_path):
    syn.generate_medsynth(tmp_path / "again", n_train=45, n_test=9, seed=3, image_size=SIZE)
    syn.generate_medsynth(tmp_path / "other", n_train=45, n_test=9, seed=4, image_size=SIZE)
    first, again, other = _tree_bytes(bench), _tree_bytes(tmp_path / "again"), _tree_bytes(tmp_path / "other")
    assert len(first) > 90 and first == again
    assert first.keys() == other.keys()  # same layout ...
    assert first["train.jsonl"] != other["train.jsonl"]  # ... different content
    pngs = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != other[k] for k in pngs) > 0.9 * len(pngs)


def test_a_task_does_not_depend_on_which_other_tasks_are_generated(bench, tmp_path):
    syn.generate_medsynth(tmp_path, n_train=5, n_test=1, seed=3, image_size=SIZE, tasks=["text_to_image"])
    alone = _records(tmp_path / "train.jsonl")
    together = _by_task(_records(bench / "train.jsonl"), "text_to_image")
    assert alone == together
    assert (tmp_path / alone[0]["output_img"][0]["path"]).read_bytes() == (
        bench / alone[0]["output_img"][0]["path"]
    ).read_bytes()


# ---------------------------------------------------------------------------------------------
# Record format (spec/medical.md section 1)


def test_every_record_follows_the_spec(bench, records):
    assert {r["main_task_type"] for r in records} == set(syn.TASKS)
    assert len({r["sample_id"] for r in records}) == len(records)
    for r in records:
        assert list(r)[:1] == ["main_task_type"]
        for key in ("sample_id", "input_img", "output_img", "message"):
            assert key in r, (key, r["sample_id"])
        assert ("degrade_type" in r) == (r["main_task_type"] in RESTORATION)
        roles = [t["from"] for t in r["message"]]
        assert roles == ["human", "gpt"]
        human = sum(t["value"].count("<image>") for t in r["message"] if t["from"] == "human")
        gpt = sum(t["value"].count("<image>") for t in r["message"] if t["from"] == "gpt")
        assert (human, gpt) == (len(r["input_img"]), len(r["output_img"])), r["sample_id"]
        for ref in r["input_img"] + r["output_img"]:
            assert set(ref) == {"path", "height", "width"} and not Path(ref["path"]).is_absolute()
            img = _img(bench, ref)
            assert img.shape[:2] == (ref["height"], ref["width"]) == (SIZE, SIZE)
            assert img.ndim == (2 if r["modality"] in si.GRAYSCALE else 3)


def test_the_record_reader_accepts_every_file(bench):
    validate = pytest.importorskip("unimedvl.data.validate")
    for path in sorted(bench.glob("*.jsonl")):
        report = validate.validate_jsonl(path, decode=True)
        assert not report.problems, [str(p) for p in report.problems[:5]]


def test_task_formats(records):
    for r in _by_task(records, "image_understanding"):
        assert r["question_type"] in syn.QUESTION_TYPES and r["message"][1]["value"] == r["answer"]
    restore = [r for r in records if r["main_task_type"] in RESTORATION]
    assert all(
        r["message"][1]["value"].startswith("Assessment: ") and r["message"][1]["value"].endswith("<image>")
        for r in restore
    )
    assert {r["degrade_type"] for r in _by_task(records, "super_resolution")} == {"sr_x2", "sr_x4"}
    for r in _by_task(records, "counterfactual_generation"):
        assert r["message"][1]["value"].startswith("<image>\nThe ") and "removed" in r["message"][1]["value"]
    for r in _by_task(records, "text_to_image"):
        assert r["input_img"] == [] and r["message"][1]["value"] == "<image>"
        assert r["message"][0]["value"] == syn.caption_text(r["modality"], _lesions(r))


# ---------------------------------------------------------------------------------------------
# Ground truth


def _lesions(r) -> list[si.Lesion]:
    return [si.Lesion(l["region"], *l["center"], l["radius"], l["size"]) for l in r["lesions"]]


def test_answers_and_reports_match_the_ground_truth(records):
    vqa = _by_task(records, "image_understanding")
    assert {r["question_type"] for r in vqa} == set(syn.QUESTION_TYPES)
    for r in vqa:
        n, answer = len(r["lesions"]), r["answer"]
        expected = {
            "modality": r["modality"],
            "presence": "yes" if n else "no",
            "count": str(n),
            "location": r["lesions"][0]["region"] if n == 1 else None,
        }[r["question_type"]]
        assert answer == expected, r
    for r in _by_task(records, "report_generation"):
        assert r["message"][1]["value"] == syn.report_text(r["modality"], _lesions(r))
    lesion = si.Lesion("left lung", 0, 0, 1, "small")
    assert syn.report_text("ct", [lesion, lesion]) == "CT image. Two lesions in the left lung."
    assert syn.report_text("fundus", []) == "Fundus photograph. No lesion seen."


@pytest.mark.parametrize("modality", si.MODALITIES)
def test_lesions_are_visible_local_and_in_their_region(modality):
    for k in range(6):
        scene = si.make_scene(modality, SIZE, np.random.default_rng([k, 11]), n_lesions=1 + k % 3)
        with_les, without = si.render(scene).astype(float), si.render(scene.without_lesions()).astype(float)
        mask = si.lesion_mask(scene)
        assert np.array_equal(with_les[~mask], without[~mask])  # nothing changes outside the discs
        for les in scene.lesions:
            disc = np.hypot(*np.mgrid[:SIZE, :SIZE] + 0.5 - np.array([les.cy, les.cx])[:, None, None]) < les.r * 0.6
            assert np.abs(with_les[disc] - without[disc]).mean() > 25, (modality, les)
            region = si.region_masks(scene)[les.region]
            assert region[disc].all()
            # without the lesion the disc looks like the rest of its region (no lesion pixels left)
            tissue = without[region & ~mask].mean(0)
            assert np.abs(without[disc].mean(0) - tissue).max() < 0.5 * np.abs(with_les[disc].mean(0) - tissue).max()
            if les.region.startswith(("left", "right")):  # radiological convention: patient's left on the right
                assert (les.cx > SIZE / 2) == les.region.startswith("left")


def test_counterfactual_output_removes_exactly_the_lesions(bench, records):
    cases = _by_task(records, "counterfactual_generation")
    assert cases and all(r["lesions"] for r in cases)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    for r in cases:
        before, after = _img(bench, r["input_img"][0]).astype(float), _img(bench, r["output_img"][0]).astype(float)
        near = np.zeros((SIZE, SIZE), bool)
        for les in _lesions(r):
            dist = np.hypot(yy - les.cy, xx - les.cx)
            near |= dist < les.r + 1  # +1: the stored centre and radius are rounded
            assert np.abs(before[dist < les.r * 0.6] - after[dist < les.r * 0.6]).mean() > 20, (r["sample_id"], les)
        assert np.array_equal(before[~near], after[~near]), r["sample_id"]


def test_restoration_pairs(bench, records):
    for r in [r for r in records if r["main_task_type"] in RESTORATION - {"stain_translation"}]:
        degraded, clean = _img(bench, r["input_img"][0]), _img(bench, r["output_img"][0])
        mse = np.mean((degraded.astype(float) - clean.astype(float)) ** 2)
        assert 12 < 10 * np.log10(255**2 / mse) < 45, r["sample_id"]
        if r["main_task_type"] == "super_resolution":
            assert np.array_equal(degraded, degrade.down_up(clean, r["degrade_params"]["factor"]))
    assert {r["modality"] for r in _by_task(records, "motion_correction")} <= {"mri", "ct"}


def test_stain_pair_shares_the_tissue_layout():
    for k in range(4):
        scene = si.make_scene("histology", 96, np.random.default_rng([k, 5]), n_lesions=1)
        he, ihc = (x.astype(float) for x in si.render_stain_pair(scene))
        assert he[..., 0].mean() > he[..., 1].mean() + 20  # pink / purple: red over green
        nuclei_he, nuclei_ihc = he.mean(-1) < 170, ihc.mean(-1) < 200
        iou = (nuclei_he & nuclei_ihc).sum() / (nuclei_he | nuclei_ihc).sum()
        assert iou > 0.5, iou
        brown = (ihc[..., 0] > ihc[..., 2] + 30) & (ihc.mean(-1) < 200)
        assert brown[si.lesion_mask(scene)].mean() > 0.3  # tumour cluster is DAB-positive
        assert not ((he[..., 0] > he[..., 2] + 30) & (he.mean(-1) < 200)).any()  # no brown in H&E


def test_modalities_are_distinguishable_from_simple_image_statistics():
    def features(img):
        rgb = np.stack([img] * 3, -1) if img.ndim == 2 else img
        rgb = rgb.astype(float) / 255
        body = rgb.mean(-1) >= 0.08
        # colour, contrast, background share, and the body's shape (a chest is wider than tall, a head taller)
        return np.r_[
            rgb.mean((0, 1)),
            rgb.std((0, 1)),
            1 - body.mean(),
            body.any(0).mean() - body.any(1).mean(),
            float(img.ndim == 3),
        ]

    feats = {
        m: np.array(
            [features(si.render(si.make_scene(m, SIZE, np.random.default_rng([k, 9]), k % 4))) for k in range(16)]
        )
        for m in si.MODALITIES
    }
    centroids = {m: f[:8].mean(0) for m, f in feats.items()}
    hits = [
        min(centroids, key=lambda c: np.linalg.norm(x - centroids[c])) == m for m, f in feats.items() for x in f[8:]
    ]
    assert np.mean(hits) >= 0.95


def test_larger_images_and_all_lesion_counts_fit():
    for modality in si.MODALITIES:
        scene = si.make_scene(modality, 256, np.random.default_rng(1), n_lesions=3)
        img = si.render(scene)
        assert img.shape[:2] == (256, 256) and len(scene.lesions) == 3
    for modality in si.MODALITIES:  # the location question needs every region to hold a lesion
        for region in si.REGIONS[modality]:
            for k in range(5):
                scene = si.make_scene(modality, 64, np.random.default_rng([2, k]), n_lesions=1, regions=[region])
                assert scene.lesions[0].region == region
    for modality in si.MODALITIES:  # three lesions of the design-rule size always find room (some in other regions)
        for k in range(40):
            scene = si.make_scene(modality, 64, np.random.default_rng([3, k]), n_lesions=3)
            assert len(scene.lesions) == 3


def test_lesions_follow_the_design_rule():
    """Every lesion is at least LESION_MIN_RADIUS of the side: about 0.7 of a 14 px ViT patch at the demo's size."""
    radii = []
    for modality in si.MODALITIES:
        for k in range(30):
            scene = si.make_scene(modality, 64, np.random.default_rng([4, k]), n_lesions=k % 4)
            radii += [les.r / 64 for les in scene.lesions]
    assert min(radii) >= si.LESION_MIN_RADIUS and 2 * si.LESION_MIN_RADIUS * 70 >= 0.7 * 14  # ViT at 70 px
    assert np.mean(radii) > 1.1 * si.LESION_MIN_RADIUS  # both size classes occur


# ---------------------------------------------------------------------------------------------
# Dataset configuration, CLI, errors


def test_dataset_info_and_mix(bench):
    info = yaml.safe_load((bench / "dataset_info.yaml").read_text())
    mix = yaml.safe_load((bench / "mix.yaml").read_text())
    assert set(info) == set(mix) == set(syn.DATASET_TYPES)
    for group, datasets in info.items():
        for entry in datasets.values():
            assert Path(entry["data_dir"]).is_absolute() and Path(entry["data_dir"]) == bench.resolve()
            assert len(Path(entry["jsonl_path"]).read_text().splitlines()) == entry["num_total_samples"] > 0
        cfg = mix[group]
        assert set(cfg["dataset_names"]) <= set(datasets) and all(n.endswith("_train") for n in cfg["dataset_names"])
        assert cfg["image_transform_args"] == {"image_stride": 16, "max_image_size": SIZE, "min_image_size": SIZE}
        vit = cfg["vit_image_transform_args"]
        assert vit["max_image_size"] % 14 == vit["min_image_size"] % 14 == 0
        assert vit["min_image_size"] <= SIZE <= vit["max_image_size"]
        assert cfg["num_used_data"] == {n: [0, 0] for n in cfg["dataset_names"]}
        assert cfg["is_mandatory"] is False and cfg["shuffle_lines"] is True
    assert sum(len(_records(bench / f"train_{short}.jsonl")) for short in syn.DATASET_TYPES.values()) == 45


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="unimedvl")
    synth_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--n-train",
            "6",
            "--n-test",
            "2",
            "--tasks",
            "text_to_image,report_generation",
        ]
    )
    assert args.func(args) == 0
    recs = _records(tmp_path / "s" / "train.jsonl")
    # interleaved round-robin, so a prefix (eval --limit) covers every task
    assert [r["main_task_type"] for r in recs] == ["report_generation", "text_to_image"] * 3
    assert "train: 6 records" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--overwrite"):
        args.func(args)
    args.overwrite = True
    assert args.func(args) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 80 + 4}, "multiple of 16"),
        ({"image_size": 32}, "at least 64"),
        ({"tasks": ["segmentation"]}, "unknown MedSynth task"),
        ({"n_train": -1}, "n_train"),
    ],
)
def test_bad_arguments_name_the_fix(tmp_path, kwargs, match):
    args = {"n_train": 2, "n_test": 0, "seed": 0, "image_size": 64, **kwargs}
    with pytest.raises(ConfigError, match=match):
        syn.generate_medsynth(tmp_path / "x", **args)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="does not look like"):
        syn.generate_medsynth(tmp_path, 1, 0, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


# ---------------------------------------------------------------------------------------------
# Real evaluation set


def test_real_eval_set_builds_from_installed_packages(tmp_path):
    summary = real_samples.build_real_eval_set(tmp_path, image_size=SIZE, seed=0)
    assert summary["sources"] == ["dipy", "nibabel", "pydicom", "skimage"] and not summary["skipped"]
    recs = _records(tmp_path / "test.jsonl")
    assert len(recs) == summary["count"] == 4 * len(summary["images"])
    assert {r["main_task_type"] for r in recs} == {"denoising", "deblurring", "super_resolution"}
    assert {r["modality"] for r in recs} == {"ct", "mri", "histology", "fundus"}
    for r in recs:
        assert r["source"] and r["message"][0]["value"].count("<image>") == len(r["input_img"]) == 1
        degraded, clean = _img(tmp_path, r["input_img"][0]), _img(tmp_path, r["output_img"][0])
        assert degraded.shape == clean.shape and degraded.shape[:2] == (SIZE, SIZE)
        assert not np.array_equal(degraded, clean) and clean.std() > 10
    assert any("CT_small.dcm" in r["source"] for r in recs)
    again = real_samples.build_real_eval_set(tmp_path / "again", image_size=SIZE, seed=0)
    assert Path(again["jsonl"]).read_bytes() == (tmp_path / "test.jsonl").read_bytes()


def test_real_eval_set_skips_missing_sources(tmp_path, monkeypatch):
    def missing(size):
        raise ImportError("package 'nope' is not installed")

    monkeypatch.setattr(real_samples, "SOURCES", {"nope": missing, "dipy": real_samples.SOURCES["dipy"]})
    with pytest.warns(UserWarning, match="skipping nope"):
        summary = real_samples.build_real_eval_set(tmp_path / "a", image_size=64)
    assert summary["sources"] == ["dipy"] and "nope" in summary["skipped"]
    monkeypatch.setattr(real_samples, "SOURCES", {"nope": missing})
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no real medical images"):
        real_samples.build_real_eval_set(tmp_path / "b", image_size=64)


def test_task_weights_share_records_and_prefixes_stay_mixed(tmp_path):
    summary = syn.generate_medsynth(
        tmp_path / "w",
        n_train=10,
        n_test=5,
        seed=1,
        image_size=SIZE,
        tasks=["vqa", "denoising"],
        task_weights={"vqa": 4},
    )
    assert summary["counts"]["train"] == {"image_understanding": 8, "denoising": 2}
    assert summary["counts"]["test"] == {"image_understanding": 4, "denoising": 1}
    tasks = [r["main_task_type"] for r in _records(tmp_path / "w" / "train.jsonl")]
    assert tasks[:4] == ["image_understanding", "denoising"] * 2 and tasks[4:] == ["image_understanding"] * 6


@pytest.mark.parametrize(
    "weights, message", [({"nope": 2}, "nope"), ({"vqa": 0}, "positive"), ({"denoising": 1}, "chosen tasks")]
)
def test_bad_task_weights_are_refused(tmp_path, weights, message):
    with pytest.raises(ConfigError, match=message):
        syn.generate_medsynth(tmp_path / "x", 4, 1, tasks=["vqa"], task_weights=weights)


def test_task_weights_flag_parses_and_names_bad_items():
    assert synth_cli.parse_task_weights("vqa=3, report=0.5") == {"vqa": 3.0, "report": 0.5}
    with pytest.raises(ConfigError, match="'vqa'"):
        synth_cli.parse_task_weights("vqa")


def test_vit_image_size_sets_the_mix_vit_transform(tmp_path):
    syn.generate_medsynth(tmp_path / "v", 2, 0, seed=1, image_size=SIZE, tasks=["vqa"], vit_image_size=112)
    mix = yaml.safe_load((tmp_path / "v" / "mix.yaml").read_text())
    vit = mix["vlm_sft"]["vit_image_transform_args"]
    assert vit["min_image_size"] == vit["max_image_size"] == 112
    assert mix["vlm_sft"]["image_transform_args"]["max_image_size"] == SIZE
    with pytest.raises(ConfigError, match="vit_image_size"):
        syn.generate_medsynth(tmp_path / "w", 2, 0, tasks=["vqa"], vit_image_size=7)


def test_a_task_without_records_gets_no_empty_dataset(tmp_path):
    summary = syn.generate_medsynth(tmp_path / "few", n_train=8, n_test=0, seed=0, image_size=SIZE)
    assert summary["counts"]["train"]["text_to_image"] == 0
    info = yaml.safe_load((tmp_path / "few" / "dataset_info.yaml").read_text())
    assert "t2i" not in info and "medsynth_t2i_train" not in summary["datasets"]


def test_worker_processes_write_the_same_files(bench, tmp_path):
    syn.generate_medsynth(tmp_path / "two", n_train=45, n_test=9, seed=3, image_size=SIZE, workers=2)
    assert _tree_bytes(tmp_path / "two") == _tree_bytes(bench)
    with pytest.raises(ConfigError, match="workers"):
        syn.generate_medsynth(tmp_path / "bad", n_train=1, n_test=0, workers=0)
