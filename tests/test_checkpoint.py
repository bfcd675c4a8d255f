"""Release-layout checkpoints: round trips, implied values, sharded files, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from unimedvl.checkpoint.release import CONFIG_FILE, load_model, read_model_config, save_model
from unimedvl.cli import main as cli_main
from unimedvl.config import model_config
from unimedvl.errors import CheckpointError
from unimedvl.models.unified import UnifiedModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = UnifiedModel(model_config("debug"))
    path = tmp_path_factory.mktemp("ckpt") / "debug"
    save_model(model, path)
    return model, path


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_round_trip_is_bit_identical(saved):
    model, path = saved
    loaded = load_model(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == model.config
    assert not any(p.requires_grad for p in loaded.vae.parameters())
    half = load_model(path, dtype="bf16")
    assert half.language_model.lm_head.weight.dtype == torch.bfloat16


def test_ema_and_raw_weights(saved, tmp_path):
    model, _ = saved
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_model(model, tmp_path / "c", ema_state=ema)
    key = "connector.fc1.weight"
    assert torch.equal(load_model(tmp_path / "c").state_dict()[key], ema[key])
    assert torch.equal(load_model(tmp_path / "c", prefer="model").state_dict()[key], model.state_dict()[key])


def test_release_layout_without_our_config(saved, tmp_path):
    model, path = saved
    release = _copy(path, tmp_path / "release")
    (release / CONFIG_FILE).unlink()
    llm = json.loads((release / "llm_config.json").read_text())
    for implied in ("qk_norm", "tie_word_embeddings", "layer_module"):
        llm.pop(implied)
    (release / "llm_config.json").write_text(json.dumps(llm))
    # Position tables are recomputable: a release file may drop them.
    weights = load_file(str(release / "ema.safetensors"))
    weights = {k: v for k, v in weights.items() if not k.endswith("pos_embed.pos_embed")}
    save_file(weights, str(release / "ema.safetensors"))
    cfg = read_model_config(release)
    assert cfg.llm.qk_norm and cfg.llm.layer_module == "Qwen2MoTDecoderLayer" and not cfg.llm.tie_word_embeddings
    assert cfg.vit.num_hidden_layers == model.config.vit.num_hidden_layers  # file says one more
    assert cfg.max_latent_size == 64 and cfg.latent_patch_size == 2
    assert cfg.vae.ch == model.config.vae.ch and cfg.vae.ch_mult == model.config.vae.ch_mult
    loaded = load_model(release)
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        if not key.endswith("pos_embed"):
            assert torch.equal(value, ref[key]), key


def test_sharded_index(saved, tmp_path):
    model, path = saved
    sharded = _copy(path, tmp_path / "sharded")
    weights = load_file(str(sharded / "ema.safetensors"))
    (sharded / "ema.safetensors").unlink()
    keys = sorted(weights)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, names in parts.items():
        save_file({k: weights[k] for k in names}, str(sharded / name))
        weight_map.update({k: name for k in names})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = load_model(sharded)
    assert torch.equal(loaded.state_dict()[keys[0]], weights[keys[0]])


def test_missing_key_is_named(saved, tmp_path):
    _, path = saved
    broken = _copy(path, tmp_path / "missing")
    weights = load_file(str(broken / "ema.safetensors"))
    del weights["connector.fc2.bias"]
    save_file(weights, str(broken / "ema.safetensors"))
    with pytest.raises(CheckpointError, match="missing 1 key.*connector.fc2.bias"):
        load_model(broken)


def test_truncated_file_is_named(saved, tmp_path):
    _, path = saved
    broken = _copy(path, tmp_path / "truncated")
    data = (broken / "ema.safetensors").read_bytes()
    (broken / "ema.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ema.safetensors.*truncated or corrupted"):
        load_model(broken)


def test_config_contradicting_shapes(saved, tmp_path):
    _, path = saved
    broken = _copy(path, tmp_path / "contradict")
    text = (broken / CONFIG_FILE).read_text().replace("intermediate_size: 128", "intermediate_size: 96")
    (broken / CONFIG_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=r"tensor language_model\.model\.layers\.0\.mlp.*shape"):
        load_model(broken)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="llm_config.json"):
        load_model(tmp_path)


def test_init_checkpoint_cli_writes_release_layout(tmp_path, capsys):
    assert cli_main(["init-checkpoint", "--size", "debug", "--out", str(tmp_path / "c"), "--seed", "3"]) == 0
    names = {p.name for p in (tmp_path / "c").iterdir()}
    expected = {
        "llm_config.json",
        "vit_config.json",
        "ae.safetensors",
        "ema.safetensors",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        CONFIG_FILE,
    }
    assert expected <= names
    model = load_model(tmp_path / "c")
    assert model.config == model_config("debug")
    assert torch.count_nonzero(model.llm2vae.weight) == 0  # fresh model predicts zero velocity
    assert cli_main(["init-checkpoint", "--size", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model size" in capsys.readouterr().err
