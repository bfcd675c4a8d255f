"""Hostile checkpoint folders (issue 28, items 4 and 5): sizes are checked against the safetensors
headers before anything is allocated, and an index never sends the loader outside the folder."""

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.checkpoint.release import load_model  # noqa: E402
from unimedvl.errors import CheckpointError, ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def _copy(src: Path, dst: Path, **llm_or_model) -> Path:
    shutil.copytree(src, dst)
    cfg_file = dst / "unimedvl_config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    for key, value in llm_or_model.items():
        if key in cfg["llm"]:
            cfg["llm"][key] = value
        else:
            cfg[key] = value
    cfg_file.write_text(yaml.safe_dump(cfg))
    return dst


def test_absurd_hidden_size_is_refused_from_the_headers_before_any_allocation(debug_ckpt, tmp_path):
    # 10^7 wide: the position tables alone would take > 100 GB (what the drill saw: a 41 GB allocation)
    bad = _copy(debug_ckpt, tmp_path / "bad", hidden_size=10**7, head_dim=2_500_000)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_model(bad)
    message = str(err.value)
    assert "has shape" in message and "(1024, 64)" in message and "10000000" in message and "\n" not in message
    assert time.perf_counter() - start < 30  # nothing big was built (a 100 GB allocation fails or takes minutes)


def test_trainer_checks_the_shapes_before_allocating(debug_ckpt, tmp_path):
    from test_train_run import make_cfg
    from unimedvl.train.trainer import Trainer

    bad = _copy(debug_ckpt, tmp_path / "bad", hidden_size=10**7, head_dim=2_500_000)
    with pytest.raises(CheckpointError, match=r"has shape .*hidden_size"):
        Trainer(make_cfg(tmp_path, bad), loader_factory=ts.build_loader).setup()


def test_a_position_table_no_file_bounds_is_refused(debug_ckpt, tmp_path):
    bad = _copy(debug_ckpt, tmp_path / "bad", max_latent_size=100_000)
    with pytest.raises(ConfigError, match=r"position table latent_pos_embed would take \d+ GiB.*max_latent_size"):
        load_model(bad)


def _index_to(ckpt: Path, target: str) -> None:
    with safe_open(str(ckpt / "ema.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    (ckpt / "ema.safetensors").rename(ckpt / "moved.safetensors")
    index = {"metadata": {}, "weight_map": {key: target for key in keys}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "../other/ema.safetensors", "shards/../../other/ema.safetensors", "C:\\weights\\ema.safetensors"],
)
def test_an_index_naming_a_file_outside_the_folder_is_refused(debug_ckpt, tmp_path, target):
    shutil.copytree(debug_ckpt, tmp_path / "other")  # a real checkpoint there: before, it was loaded silently
    ckpt = tmp_path / "ckpt"
    shutil.copytree(debug_ckpt, ckpt)
    _index_to(ckpt, target)
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt)
    message = str(err.value)
    assert "model.safetensors.index.json" in message and "inside" in message and "\n" not in message


def test_an_index_inside_the_folder_still_loads(debug_ckpt, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(debug_ckpt, ckpt)
    _index_to(ckpt, "moved.safetensors")
    reference = load_model(debug_ckpt).state_dict()
    loaded = load_model(ckpt).state_dict()
    assert loaded.keys() == reference.keys() and all((loaded[k] == reference[k]).all() for k in reference)


def test_hf_weights_index_outside_the_folder_is_refused(tmp_path):
    from unimedvl.models.hf_qwen import load_state_dict_files

    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "/etc/passwd"}}))
    with pytest.raises(CheckpointError, match="inside"):
        load_state_dict_files(tmp_path)
