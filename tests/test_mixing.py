"""Registry, dataset info and the YAML mix: accepted forms, and one clear line per mistake."""

import json

import pytest
import yaml

from unimedvl.cli import main as cli
from unimedvl.config import model_config
from unimedvl.data.datasets import DATASET_REGISTRY, get_dataset_type, register_dataset_type
from unimedvl.data.mixing import check_mix, load_mix
from unimedvl.data.plans import SequencePlan
from unimedvl.errors import ConfigError
from unimedvl.medsynth.generator import generate_medsynth

DEBUG = model_config("debug")
VAE = {"image_stride": 16, "max_image_size": 64, "min_image_size": 64}
VIT = {"image_stride": 14, "max_image_size": 70, "min_image_size": 56, "max_pixels": 4900}


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    out = tmp_path_factory.mktemp("medsynth")
    generate_medsynth(out, n_train=18, n_test=0, seed=1)
    return out


def text_jsonl(path, n, prefix="r"):
    lines = [
        json.dumps(
            {
                "main_task_type": "text_only",
                "sample_id": f"{prefix}{i}",
                "message": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}],
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def dump(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def text_mix(tmp_path):
    """A grouped mix over relative paths: info in a sub-folder, JSONL files beside it."""
    data = tmp_path / "data"
    data.mkdir()
    text_jsonl(data / "a.jsonl", 10, "a")
    text_jsonl(data / "b.jsonl", 6, "b")
    text_jsonl(data / "c.jsonl", 4, "c")
    info = dump(
        data / "info.yaml",
        {
            "text_only": {
                "a": {"jsonl_path": "a.jsonl"},
                "b": {"jsonl_path": "b.jsonl", "data_dir": "."},
                "c": {"jsonl_path": "c.jsonl", "num_total_samples": 4},
            }
        },
    )
    return tmp_path, info


def problems_of(tmp_path, info, entry, model=DEBUG):
    mix = dump(tmp_path / "mix.yaml", {"text_only": entry})
    result, problems = check_mix(mix, info, model)
    assert result is None and problems
    return problems


def test_medsynth_mix_as_written(medsynth):
    mix = load_mix(medsynth / "mix.yaml", model_cfg=DEBUG)  # dataset_info.yaml beside the mix is found
    assert [g.dataset_type for g in mix.groups] == [
        "vlm_sft",
        "MedicalImageEditingIterableDataset",
        "CounterfactualMedicalIterableDataset_ver1",
        "t2i",
    ]
    assert [g.weight for g in mix.groups] == [4.0, 10.0, 2.0, 2.0]
    assert all(g.shuffle_lines and g.vae_transform.max_image_size == 64 for g in mix.groups)
    assert mix.groups[1].read(0).task_type in (
        "denoising",
        "deblurring",
        "super_resolution",
        "motion_correction",
        "stain_translation",
    )


def test_grouped_form_relative_paths_and_ranges(text_mix):
    tmp_path, info = text_mix
    mix = dump(
        tmp_path / "mix.yaml",
        {
            "dataset_info": "data/info.yaml",
            "text_only": {
                "dataset_names": {"ab": ["a", "b"], "c": "c"},
                "weight": {"ab": 2, "c": 0.5},
                "num_used_data": {"ab": [[2, 5], 3], "c": [1]},
                "is_mandatory": True,
                "shuffle_lines": True,
                "shuffle_seed": 7,
                "frame_sampler_args": {"ignored": 1},
            },
        },
    )
    resolved = load_mix(mix, model_cfg=DEBUG)
    ab, c = resolved.groups
    assert (ab.key, ab.num_records, ab.weight, c.num_records, c.weight) == ("text_only/ab", 6, 2.0, 3, 0.5)
    assert [ab.read(k).sample_id for k in range(6)] == ["a2", "a3", "a4", "b0", "b1", "b2"]
    assert [c.read(k).sample_id for k in range(3)] == ["c1", "c2", "c3"]
    assert ab.where(3).endswith("b.jsonl:1") and ab.is_mandatory and ab.shuffle_seed == 7
    # JSON info file, flat list, [0] and [0, 0] mean everything, BAGEL's per-group list form.
    json_info = tmp_path / "data" / "info.json"
    json_info.write_text(json.dumps(yaml.safe_load((tmp_path / "data" / "info.yaml").read_text())))
    flat = dump(
        tmp_path / "flat.yaml",
        {"text_only": {"dataset_names": ["a", "b", "c"], "weight": [1, 2, 3], "num_used_data": [0, [0], [0, 0]]}},
    )
    resolved = load_mix(flat, json_info, DEBUG)
    assert [(g.group, g.num_records, g.weight) for g in resolved.groups] == [
        ("a", 10, 1.0),
        ("b", 6, 2.0),
        ("c", 4, 3.0),
    ]
    assert resolved.info_path == str(json_info)


def test_each_mistake_is_one_clear_line(text_mix, tmp_path):
    _, info = text_mix
    lines = problems_of(
        tmp_path,
        info,
        {
            "dataset_names": ["a", "nope"],
            "weight": {"a": -1, "nope": 1},
            "num_used_data": {"a": [0, 50], "nope": 0},
            "bogus": 1,
        },
    )
    text = "\n".join(lines)
    assert any("unknown key(s) bogus" in line for line in lines)
    assert any("unknown dataset 'nope'; known datasets: a, b, c" in line for line in lines)
    assert any("weight.a: must be a number >= 0, got -1" in line for line in lines)
    assert any("num_used_data [0, 50] is outside the file (10 records" in line for line in lines)
    assert all("\n" not in line for line in lines) and str(tmp_path / "mix.yaml") in text
    assert any("every weight is zero" in p for p in problems_of(tmp_path, info, {"dataset_names": ["a"], "weight": 0}))
    assert any(
        "[5, 3] is empty" in p
        for p in problems_of(tmp_path, info, {"dataset_names": ["a"], "num_used_data": {"a": [5, 3]}})
    )
    assert any(
        "is not a group of this entry" in p
        for p in problems_of(tmp_path, info, {"dataset_names": ["a"], "weight": {"x": 1}})
    )
    (tmp_path / "data" / "a.jsonl").unlink()
    assert any("a.jsonl not found" in p for p in problems_of(tmp_path, info, {"dataset_names": ["a"]}))
    bad_type = dump(tmp_path / "mix2.yaml", {"nonsense_type": {"dataset_names": ["a"]}})
    with pytest.raises(ConfigError, match="unknown dataset type; known types: vlm_sft") as err:
        load_mix(bad_type, info, DEBUG)
    assert "1 problem(s) in the data mix" in str(err.value)
    with pytest.raises(ConfigError, match="no dataset info file"):
        load_mix(bad_type)


def test_declared_count_and_model_checks(medsynth, tmp_path):
    info = dump(
        tmp_path / "info.yaml",
        {
            "t2i": {
                "t": {
                    "jsonl_path": str(medsynth / "train_t2i.jsonl"),
                    "data_dir": str(medsynth),
                    "num_total_samples": 99,
                }
            }
        },
    )
    lines = problems_of(tmp_path, info, {"dataset_names": ["t"]})  # under text_only: found in another group
    assert any("num_total_samples=99 but" in line for line in lines)
    info = dump(
        tmp_path / "info.yaml",
        {"t2i": {"t": {"jsonl_path": str(medsynth / "train_t2i.jsonl"), "data_dir": str(medsynth)}}},
    )
    mix = dump(tmp_path / "mix.yaml", {"t2i": {"dataset_names": ["t"], "image_transform_args": VAE}})
    assert load_mix(mix, info, DEBUG).groups[0].num_records == 2
    no_gen = model_config("debug")
    no_gen.visual_gen = False
    _, problems = check_mix(mix, info, no_gen)
    assert len(problems) == 1 and "needs the generation path (visual_gen)" in problems[0]
    big = dump(
        tmp_path / "big.yaml",
        {"t2i": {"dataset_names": ["t"], "image_transform_args": {**VAE, "max_image_size": 1024}}},
    )
    _, problems = check_mix(big, info, DEBUG)
    assert any("beyond the model's max_latent_size=32; lower it to <= 512" in p for p in problems)
    _, problems = check_mix(dump(tmp_path / "none.yaml", {"t2i": {"dataset_names": ["t"]}}), info, DEBUG)
    assert any("image_transform_args is missing" in p for p in problems)


def test_register_dataset_type():
    class Captions(SequencePlan):
        def __init__(self):
            super().__init__("my_captions", inputs="forbidden")

    plan = register_dataset_type("my_captions", Captions)
    try:
        assert get_dataset_type("my_captions") is plan and isinstance(plan, Captions)
        with pytest.raises(ConfigError, match="already registered"):
            register_dataset_type("my_captions", plan)
    finally:
        DATASET_REGISTRY.pop("my_captions")
    assert get_dataset_type("t2i_pretrain") is get_dataset_type("t2i")
    assert get_dataset_type("CounterfactualMedicalIterableDataset") is get_dataset_type(
        "CounterfactualMedicalIterableDataset_ver1"
    )
    with pytest.raises(ConfigError, match="unknown dataset type 'x'; known types: vlm_sft, vlm_sft_recon"):
        get_dataset_type("x")


def test_validate_data_cli_mix_form(medsynth, tmp_path, capsys):
    assert cli(["validate-data", str(medsynth / "mix.yaml"), "--model", "debug"]) == 0
    assert "no problems found" in capsys.readouterr().out
    # A record the type cannot train (a t2i record without its output image) is a problem with its line.
    rows = [json.loads(line) for line in (medsynth / "train_t2i.jsonl").read_text().splitlines()]
    rows[1]["output_img"], rows[1]["message"][1]["value"] = [], "no image"
    bad = tmp_path / "t2i.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = dump(tmp_path / "info.yaml", {"t2i": {"t": {"jsonl_path": "t2i.jsonl", "data_dir": str(medsynth)}}})
    mix = dump(tmp_path / "mix.yaml", {"t2i": {"dataset_names": ["t"], "image_transform_args": VAE}})
    assert cli(["validate-data", str(mix), "--dataset-info", str(info), "--model", "debug"]) == 1
    assert f"{bad}:2: dataset type 't2i' needs at least one output image" in capsys.readouterr().out
    broken = dump(tmp_path / "broken.yaml", {"t2i": {"dataset_names": ["missing"]}})
    assert cli(["validate-data", str(broken), "--dataset-info", str(info), "--model", "debug"]) == 1
    assert "unknown dataset 'missing'; known datasets: t" in capsys.readouterr().out
