"""QLoRA (quantised frozen base), LoRA per part, adapter checkpoints, merge and --adapter (issue 31)."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.checkpoint.adapters import base_fingerprint, merge_adapter, read_adapter  # noqa: E402
from unimedvl.checkpoint.release import load_model  # noqa: E402
from unimedvl.errors import CheckpointError, ConfigError  # noqa: E402
from unimedvl.train.config import TrainConfig, parse_train_args  # noqa: E402
from unimedvl.train.lora import LoRALinear  # noqa: E402
from unimedvl.train.qlora import is_quantized, quantize_weight, quantized_linear  # noqa: E402
from unimedvl.train.trainer import Trainer  # noqa: E402

Q = "language_model.model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def make_cfg(tmp_path, ckpt, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = dict(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml", kinds=["und", "gen", "edit"]),
        model_path=str(ckpt),
        checkpoint_dir=str(tmp_path / "run"),
        total_steps=2,
        save_every=1000,
        warmup_steps=0,
        lr=1e-2,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        log_every=1,
        ema=0.9,
        lora_rank=4,
        lora_alpha=8.0,
        freeze_llm=True,
        freeze_vit=True,
    )
    values.update(overrides)
    return TrainConfig(**values)


def trainer(cfg):
    return Trainer(cfg, loader_factory=ts.build_loader).setup()


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_quantised_linear_matches_dequantised_weight_forward_and_backward(method):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 128, generator=g)
    q = quantize_weight(w, method)
    assert is_quantized(q) and not is_quantized(w)
    from unimedvl.train.qlora import dequantize

    plain = dequantize(q, torch.float32)
    assert (plain - w).abs().mean() < (0.1 if method == "nf4" else 0.01)  # it is a quantisation of w
    x = torch.randn(5, 128, generator=g, requires_grad=True)
    y = quantized_linear(x, q)
    y.pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, plain).pow(2).sum().backward()
    torch.testing.assert_close(y, torch.nn.functional.linear(x2, plain), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the input takes the autocast dtype
        y = quantized_linear(x, q, torch.zeros(32))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()


def test_flags_and_bad_config():
    cfg = parse_train_args(
        [
            "--model",
            "m",
            "--dataset_config_file",
            "d",
            "--lora_rank",
            "8",
            "--quantize_base",
            "nf4",
            "--lora_rank_gen",
            "16",
            "--lora_alpha_gen",
            "32",
            "--lora_rank_vit",
            "0",
            "--lora_targets_und",
            "q_proj,v_proj",
        ]
    )
    assert (cfg.quantize_base, cfg.lora_rank_gen, cfg.lora_alpha_gen, cfg.lora_rank_vit) == ("nf4", 16, 32.0, 0)
    assert cfg.lora_targets_und == ["q_proj", "v_proj"] and cfg.lora_rank_und is None
    with pytest.raises(ConfigError, match="--quantize_base nf4 needs LoRA: add --lora_rank"):
        TrainConfig(quantize_base="nf4")
    with pytest.raises(ConfigError, match="quantize_base='nf5'"):
        TrainConfig(quantize_base="nf5", lora_rank=4)
    with pytest.raises(ConfigError, match="lora_rank_gen must be >= 0"):
        TrainConfig(lora_rank=4, lora_rank_gen=-1)
    TrainConfig(quantize_base="int8", lora_rank_gen=8)  # LoRA in one part is enough


def test_lora_per_part_ranks_and_targets(tmp_path, debug_ckpt):
    cfg = make_cfg(
        tmp_path,
        debug_ckpt,
        lora_rank=2,
        lora_rank_gen=6,
        lora_alpha_gen=3.0,
        lora_rank_vit=0,
        lora_targets_und=["q_proj", "down_proj"],
        total_steps=1,
    )
    t = trainer(cfg)
    mods = dict(t.model.named_modules())
    layer = "language_model.model.layers.0."
    assert mods[layer + "self_attn.q_proj"].lora_A.shape[0] == 2
    assert isinstance(mods[layer + "mlp.down_proj"], LoRALinear)
    assert not isinstance(mods[layer + "self_attn.k_proj"], LoRALinear)  # not in the und targets
    gen = mods[layer + "self_attn.k_proj_moe_gen"]  # gen takes lora_target_modules
    assert gen.lora_A.shape[0] == 6 and gen.lora_scale == pytest.approx(0.5)
    assert not any(isinstance(m, LoRALinear) for n, m in mods.items() if n.startswith("vit_model."))
    with pytest.raises(ConfigError, match="lora_targets_vit=\\['o_proj'\\] matched no Linear layer of the vit part"):
        trainer(make_cfg(tmp_path / "b", debug_ckpt, lora_targets_vit=["o_proj"]))


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_qlora_trains_adapters_through_a_quantised_base(tmp_path, debug_ckpt, method):
    base = trainer(make_cfg(tmp_path / "plain", debug_ckpt, total_steps=1))
    t = trainer(make_cfg(tmp_path, debug_ckpt, quantize_base=method, gradient_checkpointing=True))
    mods = dict(t.model.named_modules())
    assert is_quantized(mods[Q].weight) and is_quantized(mods[Q + "_moe_gen"].weight)
    assert is_quantized(mods["vit_model.vision_model.encoder.layers.0.mlp.fc1"].weight)
    assert not is_quantized(mods["language_model.lm_head"].weight)  # only decoder and ViT layers
    trainable = {n: p for n, p in t.model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.endswith((".lora_A", ".lora_B")) or n.startswith(("connector.", "time_embedder.", "vae2llm.", "llm2vae."))
        for n in trainable
    )
    assert all(p.dtype == torch.float32 for p in trainable.values())
    # The first step sees the same batch: the loss of a quantised base is close to the float one.
    first = t.train_step()
    t.step += 1
    ref = base.train_step()
    assert abs(first["loss"] - ref["loss"]) < 0.05 * abs(ref["loss"])
    assert mods[Q].lora_B.abs().sum() > 0  # gradients reached the adapters through the quantised layers
    metrics = t.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_adapter_checkpoints_are_small_and_resume_exactly(tmp_path, debug_ckpt):
    straight = trainer(make_cfg(tmp_path / "a", debug_ckpt, quantize_base="nf4", total_steps=3))
    straight.train()
    step = Path(straight.cfg.checkpoint_dir) / "step_0000003"
    names = {p.name for p in step.iterdir()}
    assert {"adapter.safetensors", "adapter_ema.safetensors", "adapter_config.json", "train_state"} <= names
    assert not names & {"ema.safetensors", "model.safetensors", "ae.safetensors"}
    trainable = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    assert load_file(str(step / "adapter.safetensors")).keys() == trainable.keys()
    import torch.distributed.checkpoint as dcp

    saved = dcp.FileSystemReader(str(step / "train_state")).read_metadata().state_dict_metadata
    assert not [k for k in saved if k.endswith((".q_proj.weight", "embed_tokens.weight", "mlp.fc1.weight"))]
    assert {f"model.{Q}.lora_A", f"ema.{Q}.lora_A", f"optim.state.{Q}.lora_A.exp_avg"} <= saved.keys()

    cfg = make_cfg(tmp_path / "b", debug_ckpt, quantize_base="nf4", total_steps=2)
    trainer(cfg).train()
    resumed = trainer(make_cfg(tmp_path / "b", debug_ckpt, quantize_base="nf4", total_steps=3, auto_resume=True))
    assert resumed.step == 2
    resumed.train()
    a = load_file(str(step / "adapter.safetensors"))
    b = load_file(str(Path(cfg.checkpoint_dir) / "step_0000003" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

    # Resuming this QLoRA run as a full fine-tune is refused before anything is written.
    before = sorted(p.name for p in Path(cfg.checkpoint_dir).iterdir())
    with pytest.raises(CheckpointError, match="quantize_base=nf4.*this run has quantize_base=none"):
        trainer(make_cfg(tmp_path / "b", debug_ckpt, lora_rank=0, total_steps=4, auto_resume=True))
    assert sorted(p.name for p in Path(cfg.checkpoint_dir).iterdir()) == before


def test_merge_and_adapter_loading_give_the_trained_model(tmp_path, debug_ckpt, monkeypatch):
    import unimedvl.checkpoint.adapters as adapters
    from unimedvl.inference.api import UniMedVL

    cfg = make_cfg(tmp_path, debug_ckpt, ema=0.0, freeze_llm=False)  # also trains norms etc. in full
    t = trainer(cfg)
    t.train()
    step = Path(cfg.checkpoint_dir) / "step_0000002"
    config, tensors = read_adapter(step)
    assert config["base"]["fingerprint"] == base_fingerprint(debug_ckpt, "model")
    assert "language_model.model.norm.weight" in config["trained"]

    merged_dir = merge_adapter(step, tmp_path / "merged")
    merged = load_model(merged_dir, prefer="ema").state_dict()
    trained = t.model.state_dict()
    lora = {n: m for n, m in t.model.named_modules() if isinstance(m, LoRALinear)}
    for key, value in merged.items():
        owner = key.rpartition(".")[0]
        expect = trained[key]
        if owner in lora and key.endswith(".weight"):
            m = lora[owner]
            expect = expect + m.lora_scale * (m.lora_B @ m.lora_A)
        torch.testing.assert_close(value, expect.detach(), rtol=1e-5, atol=1e-6, msg=key)
    monkeypatch.setattr(adapters, "SHARD_BYTES", 200_000)  # streamed into several shards + an index
    sharded_dir = merge_adapter(step, tmp_path / "sharded")
    assert (
        len(list(sharded_dir.glob("ema-*.safetensors"))) > 3 and (sharded_dir / "ema.safetensors.index.json").is_file()
    )
    sharded = load_model(sharded_dir).state_dict()
    assert all(torch.equal(sharded[k], merged[k]) for k in merged)

    # base + --adapter (plain and int8 plans) answers like the merged checkpoint
    direct = UniMedVL.from_pretrained(debug_ckpt, device="cpu", adapter=step)
    via_step = UniMedVL.from_pretrained(step, device="cpu")  # a step directory names its base
    whole = UniMedVL.from_pretrained(merged_dir, device="cpu")
    with pytest.raises(
        CheckpointError,
        match="trained language_model.lm_head.weight in full, which this plan holds quantised; merge it first",
    ):
        UniMedVL.from_pretrained(debug_ckpt, device="cpu", adapter=step, quantize="int8")
    x = torch.randn(4, lora[Q].in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = whole.model.get_submodule(Q)(x)
        for model in (direct, via_step):
            torch.testing.assert_close(model.model.get_submodule(Q)(x), ref, rtol=1e-5, atol=1e-5)
            norm = "language_model.model.norm.weight"
            assert torch.equal(model.model.state_dict()[norm], merged[norm])


def test_an_adapter_for_another_base_is_refused(tmp_path, debug_ckpt):
    from unimedvl.inference.api import UniMedVL

    cfg = make_cfg(tmp_path, debug_ckpt, total_steps=1)
    trainer(cfg).train()
    step = Path(cfg.checkpoint_dir) / "step_0000001"
    other = ts.debug_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(CheckpointError, match="trained on .* but .*other holds other weights"):
        merge_adapter(step, tmp_path / "merged", base=other)
    assert not (tmp_path / "merged").exists()
    with pytest.raises(CheckpointError, match="holds other weights"):
        UniMedVL.from_pretrained(other, device="cpu", adapter=step)
    # on its own base, with any memory plan (int8 here; the adapter is added to the quantised layer)
    plain = UniMedVL.from_pretrained(debug_ckpt, device="cpu", adapter=step)
    int8 = UniMedVL.from_pretrained(debug_ckpt, device="cpu", adapter=step, quantize="int8")
    und = UniMedVL.from_pretrained(debug_ckpt, device="cpu", adapter=step, components="understanding")
    layer = plain.model.get_submodule(Q)
    assert torch.equal(und.model.get_submodule(Q).lora_B, layer.lora_B)
    assert layer.lora_B.abs().sum() > 0
    x = torch.randn(4, layer.base.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, approx = layer(x), int8.model.get_submodule(Q)(x)
    assert (approx - ref).norm() < 0.05 * ref.norm()


def test_nf4_without_its_library_is_one_line(tmp_path, debug_ckpt, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    cfg = make_cfg(tmp_path, debug_ckpt, quantize_base="nf4")
    with pytest.raises(ConfigError, match="--quantize_base nf4 needs torchao: pip install torchao=="):
        trainer(cfg)
    assert not Path(cfg.checkpoint_dir).exists()
