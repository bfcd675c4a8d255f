"""Trainer building blocks without a training run: flags, YAML, mesh sizes, schedule, groups, LoRA, losses."""

import argparse
import math

import pytest
import torch
from torch import nn

from unimedvl.errors import ConfigError
from unimedvl.train.config import TrainConfig, add_arguments, config_from_args, parse_train_args
from unimedvl.train.lora import LoRALinear, inject_lora, lora_scales, merge_lora_state
from unimedvl.train.losses import noise_weight, scale_grad, ssim
from unimedvl.train.parallel import mesh_shape
from unimedvl.train.params import lr_at, lr_multiplier, no_decay, param_groups


def test_flags_accept_both_spellings_and_bool_words():
    cfg = parse_train_args(
        [
            "--freeze_llm",
            "False",
            "--freeze-vit",
            "true",
            "--visual_gen",
            "--visual-und",
            "0",
            "--lr",
            "1e-5",
            "--total-steps",
            "7",
            "--sharding_strategy",
            "no_shard",
            "--resume_from",
            "None",
            "--lr_mult",
            "connector=10",
            "--lr-mult",
            "vit=0.1,llm_gen=2",
            "--lora_target_modules",
            "q_proj,v_proj",
        ]
    )
    assert cfg.freeze_llm is False and cfg.freeze_vit is True and cfg.visual_gen is True and cfg.visual_und is False
    assert cfg.lr == 1e-5 and cfg.total_steps == 7 and cfg.sharding_strategy == "NO_SHARD"
    assert cfg.resume_from is None
    assert cfg.lr_mult == {"connector": 10.0, "vit": 0.1, "llm_gen": 2.0}
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]


def test_yaml_then_command_line_overrides(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("lr: 1e-5\ntotal_steps: 50\nfreeze_vit: true\nlr_mult: {connector: 10}\nema: 0.995\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--config", str(run), "--total_steps", "9", "--lr_mult", "vit=0.5"]))
    assert cfg.lr == 1e-5 and cfg.total_steps == 9 and cfg.freeze_vit and cfg.ema == 0.995
    assert cfg.lr_mult == {"connector": 10.0, "vit": 0.5}


def test_yaml_unknown_key_and_bad_values_name_the_problem(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("learning_rate: 1e-5\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        config_from_args({"config": str(run)})
    with pytest.raises(ConfigError, match="sharding_strategy"):
        TrainConfig(sharding_strategy="ZERO3")
    with pytest.raises(ConfigError, match="ema"):
        TrainConfig(ema=1.0)
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(lr=1e-6, min_lr=1e-5)
    with pytest.raises(ConfigError, match="visual_gen"):
        TrainConfig(pixel_loss_weight=1.0, visual_gen=False)
    with pytest.raises(ConfigError, match="COMPONENT=MULTIPLIER"):
        parse_train_args(["--lr_mult", "connector"])


def test_defaults_follow_the_spec():
    cfg = TrainConfig()
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.95, 1e-15, 0.0)
    assert cfg.max_grad_norm == 1.0 and cfg.ema == 0.9999 and cfg.freeze_vae
    assert (cfg.text_cond_dropout_prob, cfg.vit_cond_dropout_prob, cfg.vae_cond_dropout_prob) == (0.1, 0.3, 0.3)
    assert (cfg.expected_num_tokens, cfg.max_num_tokens, cfg.max_num_tokens_per_sample) == (32768, 36864, 16384)


def test_mesh_shapes_and_world_size_mismatch():
    assert mesh_shape("FULL_SHARD", 8) == (1, 8)
    assert mesh_shape("SHARD_GRAD_OP", 8) == (1, 8)
    assert mesh_shape("NO_SHARD", 8) == (8, 1)
    assert mesh_shape("HYBRID_SHARD", 16, local_world_size=8) == (2, 8)
    assert mesh_shape("HYBRID_SHARD", 16, 8, num_replicate=4) == (4, 4)
    assert mesh_shape("HYBRID_SHARD", 1) == (1, 1)
    with pytest.raises(ConfigError, match="num_replicate x num_shard = world size 4"):
        mesh_shape("HYBRID_SHARD", 4, 4, num_replicate=3, num_shard=2)
    with pytest.raises(ConfigError, match="HYBRID_SHARD only"):
        mesh_shape("FULL_SHARD", 4, 4, num_replicate=3)


def test_lr_schedule_warmup_constant_cosine():
    assert lr_at(0, 1.0, 0.0, 4, 10, "constant") == 0.25
    assert lr_at(3, 1.0, 0.0, 4, 10, "constant") == 1.0
    assert lr_at(9, 1.0, 0.0, 4, 10, "constant") == 1.0
    assert lr_at(4, 1.0, 0.1, 4, 10, "cosine") == pytest.approx(1.0)
    assert lr_at(7, 1.0, 0.1, 4, 10, "cosine") == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(10, 1.0, 0.1, 4, 10, "cosine") == pytest.approx(0.1)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.language_model = nn.Module()
        self.language_model.lin = nn.Linear(4, 4)
        self.language_model.lin_moe_gen = nn.Linear(4, 4)
        self.language_model.input_layernorm = nn.LayerNorm(4)
        self.connector = nn.Linear(4, 4)


def test_param_groups_multipliers_and_no_decay():
    model = _Tiny()
    assert no_decay("language_model.input_layernorm.weight", model.language_model.input_layernorm.weight)
    assert no_decay("connector.bias", model.connector.bias)
    assert not no_decay("connector.weight", model.connector.weight)
    mult = {"llm": 0.5, "llm_gen": 2.0, "connector": 10.0}
    assert lr_multiplier("language_model.lin.weight", mult) == 0.5
    assert lr_multiplier("language_model.lin_moe_gen.weight", mult) == 2.0
    assert lr_multiplier("connector.weight", {"connector": 10.0, "connector.weight": 3.0}) == 3.0
    groups = param_groups(model, 1e-4, 0.1, mult)
    by_name = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}
    assert by_name["connector.weight"] == (pytest.approx(1e-3), 0.1)
    assert by_name["connector.bias"] == (pytest.approx(1e-3), 0.0)
    assert by_name["language_model.lin_moe_gen.weight"] == (pytest.approx(2e-4), 0.1)
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        param_groups(model, 1e-4, 0.0, {"decoder": 2.0})


def test_lora_starts_as_identity_and_merges_exactly():
    torch.manual_seed(0)
    model = _Tiny()
    x = torch.randn(3, 4)
    before = model.language_model.lin(x)
    names = inject_lora(model, rank=2, alpha=4.0, targets=["lin"])
    assert names == ["language_model.lin", "language_model.lin_moe_gen"]  # both experts
    lin = model.language_model.lin
    assert isinstance(lin, LoRALinear) and not lin.weight.requires_grad and lin.lora_A.requires_grad
    assert torch.equal(lin(x), before)  # B = 0
    with torch.no_grad():
        lin.lora_B.normal_()
    merged = merge_lora_state(model.state_dict(), lora_scales(model))
    assert not any("lora_" in k for k in merged)
    plain = nn.Linear(4, 4)
    plain.load_state_dict({"weight": merged["language_model.lin.weight"], "bias": merged["language_model.lin.bias"]})
    torch.testing.assert_close(plain(x), lin(x))
    with pytest.raises(ConfigError, match="matched no Linear"):
        inject_lora(_Tiny(), 2, 4.0, ["nothing_here"])


def test_noise_weight_ssim_and_grad_scale():
    t = torch.tensor([0.0, 0.15, 0.3, 0.9])
    assert torch.allclose(noise_weight(t, 0.3), torch.tensor([1.0, 0.5, 0.0, 0.0]))
    img = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(img, img), torch.ones(2))
    assert (ssim(img, torch.rand(2, 3, 32, 32)) < 0.5).all()
    x = torch.ones(3, requires_grad=True)
    scale_grad(x, 0.1).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.1))


@pytest.mark.parametrize("name", ["sft_generic", "restoration_pixel_loss"])
def test_shipped_run_configs_parse(name):
    from pathlib import Path

    cfg = config_from_args({"config": str(Path(__file__).parents[1] / "configs" / "train" / f"{name}.yaml")})
    assert cfg.ce_weight == 0.25 and cfg.freeze_vae
    assert (cfg.pixel_loss_weight > 0) == (name == "restoration_pixel_loss")


def test_subcommand_registration_and_one_line_errors(tmp_path):
    import subprocess
    import sys

    from unimedvl.commands.train import register, run

    parser = argparse.ArgumentParser(prog="unimedvl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--freeze-llm", "false", "--total_steps", "3"])
    assert args.func is run and config_from_args(args).total_steps == 3
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unimedvl.train",
            "--dataset_config_file",
            str(tmp_path / "missing.yaml"),
            "--model_path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: --dataset_config_file {tmp_path / 'missing.yaml'}: file not found"]
