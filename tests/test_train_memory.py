"""The training memory planner (unimedvl.checkpoint.train_memory), info --memory --train and train --max_memory."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.checkpoint.train_memory import (  # noqa: E402
    DEQUANT_PEAK_BYTES,
    TrainPlan,
    TrainSetup,
    all_plans,
    apply_max_memory,
    choose_train_plan,
    estimate_train_plan,
    estimate_train_plans,
    plan_of_config,
)
from unimedvl.config import model_config  # noqa: E402
from unimedvl.errors import ConfigError  # noqa: E402
from unimedvl.models.unified import UnifiedModel  # noqa: E402
from unimedvl.train.config import TrainConfig, config_from_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RELEASE = model_config("bagel-7b-mot")
GB = 10**9
PACKS = dict(expected_num_tokens=1536, max_num_tokens=2048, max_num_tokens_per_sample=2048)


def _params(cfg):
    with torch.device("meta"):
        model = UnifiedModel(cfg)
    vae = sum(p.numel() for p in model.vae.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    return sum(p.numel() for p in model.parameters()) - vae, vae, buffers


def test_full_fine_tune_in_fp32_counts_every_tensor_exactly():
    cfg = model_config("debug")
    setup = TrainSetup(tokens=256, dtype="fp32", cuda=False)
    e = estimate_train_plan(cfg, TrainPlan("full", checkpointing=True, ema=True), setup)
    params, vae, buffers = _params(cfg)
    # trainable: everything but the VAE; the position tables are buffers.
    assert e.trainable == params
    assert e.weights == 4 * (params + vae + buffers)
    assert (e.gradients, e.optimizer, e.ema) == (4 * params, 8 * params, 4 * params)
    no_ema = estimate_train_plan(cfg, TrainPlan("full", checkpointing=True, ema=False), setup)
    assert no_ema.ema == 0 and no_ema.total == e.total - 4 * params


def test_plans_order_and_what_each_lever_saves():
    setup = TrainSetup(tokens=2048)
    by_label = {e.plan.label: e for e in estimate_train_plans(RELEASE, setup)}
    assert len(by_label) == 16 and [p.label for p in all_plans()][:2] == ["full+ema", "full+ckpt+ema"]
    # The base gets smaller from bf16 to int8 to nf4; adapters train the same parameters.
    weights = [by_label[f"{m}+ckpt+ema"].weights for m in ("lora", "qlora-int8", "qlora-nf4")]
    assert weights[0] > weights[1] > weights[2]
    assert len({by_label[f"{m}+ckpt+ema"].trainable for m in ("lora", "qlora-int8", "qlora-nf4")}) == 1
    # Activation checkpointing keeps only layer inputs: at 2048-token packs it saves gigabytes.
    assert by_label["qlora-nf4+ema"].activations - by_label["qlora-nf4+ckpt+ema"].activations > 5 * GB
    # FSDP2 shards optimizer state over GPUs.
    eight = {e.plan.label: e for e in estimate_train_plans(RELEASE, TrainSetup(tokens=2048, gpus=8))}
    assert eight["full+ckpt+ema"].optimizer == by_label["full+ckpt+ema"].optimizer // 8


def test_which_plan_fits_which_hardware_at_release_size():
    """The README's table: 1 x 24 GB -> QLoRA with checkpointing; 1 x 80 GB -> LoRA on a bf16 base; 8 x 80 GB -> full."""

    def first(gpus, budget):
        return choose_train_plan(estimate_train_plans(RELEASE, TrainSetup(tokens=2048, gpus=gpus)), budget, gpus)

    assert first(1, 24 * GB).plan.method.startswith("qlora") and first(1, 24 * GB).plan.checkpointing
    assert first(1, 80 * GB).plan.method == "lora"
    assert first(8, 80 * GB).plan.method == "full"
    nf4 = estimate_train_plan(RELEASE, TrainPlan("qlora-nf4", True, True), TrainSetup(tokens=2048))
    lora = estimate_train_plan(RELEASE, TrainPlan("lora", True, True), TrainSetup(tokens=2048))
    assert nf4.total < 20 * GB < 24 * GB < lora.total  # the goal, as the arithmetic has it


def test_the_24gb_recipe_fits_one_24gb_gpu():
    cfg = config_from_args({"config": str(ROOT / "configs/train/qlora_24gb.yaml")})
    plan = plan_of_config(cfg)
    assert plan == TrainPlan("qlora-nf4", checkpointing=True, ema=True)
    estimate = estimate_train_plan(RELEASE, plan, TrainSetup.from_config(cfg, gpus=1, cuda=True))
    assert estimate.fits(24 * GB), estimate


def test_a_budget_no_plan_fits_names_the_smallest():
    estimates = estimate_train_plans(RELEASE, TrainSetup(tokens=2048))
    smallest = min(estimates, key=lambda e: e.total)
    with pytest.raises(
        ConfigError,
        match=rf"no training plan fits 8.0 GB .* the smallest, {re.escape(smallest.plan.label)}, "
        rf"needs {smallest.total / 1e9:.1f} GB",
    ):
        choose_train_plan(estimates, 8 * GB)


def test_max_memory_sets_the_plan_it_chose():
    cfg = TrainConfig(max_memory="24GB", ema=0.99, **PACKS)
    notice = apply_max_memory(cfg, RELEASE, gpus=1, cuda=True)
    assert "training plan qlora-" in notice and cfg.quantize_base in ("int8", "nf4")
    assert cfg.lora_rank > 0 and cfg.freeze_llm and cfg.freeze_vit and cfg.gradient_checkpointing
    roomy = TrainConfig(max_memory="1TB", gradient_checkpointing=True, **PACKS)
    assert "training plan full+ema" in apply_max_memory(roomy, RELEASE, gpus=1, cuda=True)
    assert roomy.lora_rank == 0 and not roomy.gradient_checkpointing and roomy.quantize_base == "none"
    no_ema = TrainConfig(max_memory="24GB", ema=0.0, lora_rank=8, **PACKS)  # what the run fixes stays fixed
    apply_max_memory(no_ema, RELEASE, gpus=1, cuda=True)
    assert no_ema.ema == 0.0 and no_ema.lora_rank == 8
    # The default 36864-token packs need more than any plan leaves on 24 GB: the message says what to change.
    with pytest.raises(ConfigError, match=r"smaller packs \(--max_num_tokens\)"):
        apply_max_memory(TrainConfig(max_memory="24GB"), RELEASE, gpus=1, cuda=True)


def test_max_memory_refuses_before_anything_is_written(tmp_path):
    from unimedvl.train.trainer import Trainer

    ckpt = ts.debug_checkpoint(tmp_path / "debug")
    cfg = TrainConfig(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml"),
        model_path=str(ckpt),
        checkpoint_dir=str(tmp_path / "run"),
        max_memory="1MB",
        device="cpu",
    )
    with pytest.raises(ConfigError, match="no training plan fits 1 MB per GPU on 1 GPU.*the smallest, qlora-nf4"):
        Trainer(cfg, loader_factory=ts.build_loader).setup()
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="max_memory='24 gigs' is not a memory size"):
        TrainConfig(max_memory="24 gigs")


def test_one_process_lora_holds_its_frozen_base_in_the_compute_dtype():
    from unimedvl.train.lora import inject_lora
    from unimedvl.train.params import apply_freezing, hold_frozen_in

    model = UnifiedModel(model_config("debug"))
    apply_freezing(model, freeze_llm=True, freeze_vit=True, train_vae=False)
    inject_lora(model, 4, 8.0, ["q_proj", "v_proj"])
    hold_frozen_in(model, torch.bfloat16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["language_model.model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert dtypes["vit_model.vision_model.encoder.layers.0.mlp.fc1.weight"] == torch.bfloat16
    assert dtypes["language_model.model.layers.0.self_attn.q_proj.lora_A"] == torch.float32
    assert dtypes["connector.fc1.weight"] == torch.float32  # trainable: an fp32 master


def test_info_memory_train_prints_every_plan():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "unimedvl.cli",
            "info",
            "--memory",
            "--train",
            "--size",
            "debug",
            "--budget",
            "1GB",
            "--gpus",
            "2",
            "--tokens",
            "512",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "2 GPU(s) with FSDP2" in out.stdout and "packs of 512 tokens" in out.stdout
    for label in ("full+ema", "lora+ckpt+ema", "qlora-int8+ckpt", "qlora-nf4"):
        assert f"\n{label} " in out.stdout
    assert "first plan within 1.0 GB per GPU" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "unimedvl.cli", "info", "--train"], capture_output=True, text=True)
    assert bad.returncode == 2 and "add --memory" in bad.stderr


def test_a_bf16_lora_run_trains_adapters_over_a_bf16_base_and_exports(tmp_path):
    from unimedvl.checkpoint.release import load_model
    from unimedvl.train.trainer import Trainer

    ckpt = ts.debug_checkpoint(tmp_path / "debug")
    cfg = TrainConfig(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml"),
        model_path=str(ckpt),
        checkpoint_dir=str(tmp_path / "run"),
        total_steps=2,
        save_every=2,
        warmup_steps=0,
        lr=1e-2,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        ema=0.0,
        lora_rank=2,
        lora_alpha=4.0,
        freeze_llm=True,
        freeze_vit=True,
        device="cpu",
        dtype="bf16",
    )
    t = Trainer(cfg, loader_factory=ts.build_loader).setup()
    params = dict(t.model.named_parameters())
    assert params["language_model.model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    adapter = "language_model.model.layers.0.self_attn.q_proj.lora_B"
    assert params[adapter].dtype == torch.float32
    t.train()
    assert params[adapter].abs().sum() > 0  # the adapters learned through the bf16 base
    from unimedvl.checkpoint.adapters import merge_adapter

    merged = merge_adapter(tmp_path / "run" / "step_0000002", tmp_path / "merged")  # a LoRA step holds adapters only
    model = load_model(merged, dtype=torch.float32)
    assert not any(".lora_" in name for name, _ in model.named_parameters())


DEQUANT_PEAK = """
import sys, torch
from unimedvl.train.qlora import dequantize, quantize_weight
method, dtype = sys.argv[-2], {"4": torch.float32, "2": torch.bfloat16}[sys.argv[-1]]
def kib(field):
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field + ':'))
q = quantize_weight(torch.randn(4096, 2048, dtype=torch.bfloat16), method)
base = kib('VmRSS')
open('/proc/self/clear_refs', 'w').write('5')  # VmHWM := VmRSS
out = dequantize(q, dtype)
print((kib('VmHWM') - base) * 1024 / out.numel())
"""


@pytest.mark.parametrize("key", sorted(DEQUANT_PEAK_BYTES))
def test_the_planners_dequantisation_peak_is_what_torchao_allocates(key):
    """The per-weight peak of dequantising one matrix (output and temporaries), re-measured on 8M weights."""
    pytest.importorskip("torchao")
    method, b = key
    out = subprocess.run(
        [sys.executable, "-c", DEQUANT_PEAK, method, str(b)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    assert out.returncode == 0, out.stderr[-500:]
    measured = float(out.stdout.strip().splitlines()[-1])
    assert abs(measured - DEQUANT_PEAK_BYTES[key]) <= 1.0, (key, measured)
