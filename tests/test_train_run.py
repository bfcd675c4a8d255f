"""Single-process training runs of the debug model with the stand-in loader (tests/train_support.py)."""

import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import train_support as ts  # noqa: E402
from unimedvl.checkpoint.release import load_model  # noqa: E402
from unimedvl.errors import CheckpointError, ConfigError  # noqa: E402
from unimedvl.train.config import TrainConfig  # noqa: E402
from unimedvl.train.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def debug_ckpt(tmp_path_factory):
    return ts.debug_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


def make_cfg(tmp_path, ckpt, kinds=("und", "gen", "edit"), **overrides):
    values = dict(
        dataset_config_file=ts.write_mix(tmp_path / "mix.yaml", kinds=list(kinds)),
        model_path=str(ckpt),
        checkpoint_dir=str(tmp_path / "run"),
        total_steps=2,
        save_every=1000,
        warmup_steps=0,
        lr=1e-3,
        attn_backend="sdpa",
        gradient_checkpointing=False,
        progress_bar=False,
        tensorboard=False,
        log_every=1,
        ema=0.9,
    )
    values.update(overrides)
    return TrainConfig(**values)


def trainer(cfg):
    return Trainer(cfg, loader_factory=ts.build_loader).setup()


def _initial(ckpt):
    return {
        **load_file(str(Path(ckpt) / "ema.safetensors")),
        **{"vae." + k: v for k, v in load_file(str(Path(ckpt) / "ae.safetensors")).items()},
    }


def test_freeze_flags_hold_and_export_loads(tmp_path, debug_ckpt):
    cfg = make_cfg(tmp_path, debug_ckpt, freeze_llm=True, freeze_vit=True, gradient_checkpointing=True)
    t = trainer(cfg)
    metrics = t.train()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    initial = _initial(debug_ckpt)
    state = t.model.state_dict()
    frozen = [k for k in state if k.startswith(("language_model.", "vit_model.", "vae."))]
    assert frozen and all(torch.equal(state[k], initial[k]) for k in frozen)
    assert not torch.equal(state["connector.fc1.weight"], initial["connector.fc1.weight"])
    assert not torch.equal(state["llm2vae.weight"], initial["llm2vae.weight"])
    exported = load_model(Path(cfg.checkpoint_dir) / "step_0000002", prefer="model")
    for key, value in exported.state_dict().items():
        assert torch.equal(value, state[key]), key
    ema = load_model(Path(cfg.checkpoint_dir) / "step_0000002", prefer="ema").state_dict()
    assert torch.equal(ema["language_model.lm_head.weight"], initial["language_model.lm_head.weight"])
    assert not torch.equal(ema["connector.fc1.weight"], state["connector.fc1.weight"])  # EMA lags


def test_ema_follows_its_formula(tmp_path, debug_ckpt):
    t = trainer(make_cfg(tmp_path, debug_ckpt, ema=0.8))
    params = dict(t.model.named_parameters())
    expected = {n: params[n].detach().clone() for n in t.ema.names}
    for _ in range(2):
        t.train_step()
        t.step += 1
        for n in expected:
            expected[n] = 0.8 * expected[n] + 0.2 * params[n].detach()
    for n in expected:
        torch.testing.assert_close(t.ema.state[n], expected[n], rtol=0, atol=1e-6)
    assert "vae.decoder.conv_in.weight" not in t.ema.state  # frozen parts have no shadow


def test_pixel_and_ssim_gradients_reach_the_language_model(tmp_path, debug_ckpt):
    cfg = make_cfg(
        tmp_path,
        debug_ckpt,
        kinds=("gen",),
        ce_weight=0.0,
        mse_weight=0.0,
        pixel_loss_weight=0.0,
        ssim_loss_weight=1.0,
        ssim_loss_max_t=1.0,
    )
    t = trainer(cfg)
    with torch.no_grad():  # a fresh llm2vae is zero and would block every gradient below it
        t.model.llm2vae.weight.normal_(generator=torch.Generator().manual_seed(0))
    batch = next(iter(t.loader))
    norms = t._normalizers([batch])
    grads = {}
    for scale in (1.0, 0.1):
        t.pixel_cfg.ssim_grad_scale = scale
        t.optimizer.zero_grad(set_to_none=True)
        stats = t.forward_backward_step(batch, 0, norms)
        assert stats["ssim"] > 0
        grads[scale] = t.model.llm2vae.weight.grad.clone()
        layer = t.model.language_model.model.layers[0]
        assert layer.mlp_moe_gen.up_proj.weight.grad.abs().sum() > 0  # through the generation expert
        assert all(p.grad is None for p in t.model.vae.parameters())  # the VAE stays frozen
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-9)

    t.cfg.ssim_loss_weight, t.cfg.pixel_loss_weight = 0.0, 1.0
    t.pixel_cfg.ssim_weight, t.pixel_cfg.pixel_weight, t.pixel_cfg.pixel_type = 0.0, 1.0, "l1"
    t.pixel_cfg.pixel_max_t = 1.0
    t.optimizer.zero_grad(set_to_none=True)
    stats = t.forward_backward_step(batch, 0, norms)
    assert stats["pixel"] > 0 and "ssim" in stats and stats["ssim"] == 0.0
    assert t.model.language_model.model.layers[1].self_attn.q_proj_moe_gen.weight.grad.abs().sum() > 0
    t.pixel_cfg.pixel_max_t = 1e-6  # every image has t > max_t: weight 0, nothing counts
    stats = t.forward_backward_step(batch, 0, norms)
    assert stats["pixel"] == 0.0


@pytest.mark.parametrize("mode", ["generation_only", "understanding_only"])
def test_single_capability_runs(tmp_path, debug_ckpt, mode):
    if mode == "generation_only":
        cfg = make_cfg(tmp_path, debug_ckpt, kinds=("gen",), visual_und=False)
    else:
        cfg = make_cfg(tmp_path, debug_ckpt, kinds=("und", "text"), visual_gen=False)
    metrics = trainer(cfg).train()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    if mode == "generation_only":
        assert metrics["ce"] == 0.0 and metrics["mse"] > 0
    else:
        assert metrics["mse"] == 0.0 and metrics["ce"] > 0
    model = load_model(Path(cfg.checkpoint_dir) / "step_0000002")
    assert model.config.visual_und == (mode == "understanding_only")
    assert model.config.visual_gen == (mode == "generation_only")


def test_bad_inputs_stop_before_step_one(tmp_path, debug_ckpt, monkeypatch):
    with pytest.raises(ConfigError, match="no generation data"):
        trainer(make_cfg(tmp_path, debug_ckpt, kinds=("und",)))
    cfg = make_cfg(tmp_path, debug_ckpt)
    cfg.dataset_config_file = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        trainer(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\nb: 3\n")
    cfg.dataset_config_file = str(bad)
    with pytest.raises(ConfigError, match="bad.yaml:.*invalid YAML"):
        trainer(cfg)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="llm_config.json"):
        trainer(make_cfg(tmp_path, empty))
    with pytest.raises(ConfigError, match="model_path is required"):
        trainer(make_cfg(tmp_path, ""))
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="world size 3"):
        trainer(make_cfg(tmp_path, debug_ckpt, sharding_strategy="HYBRID_SHARD", num_shard=2))


def test_checkpoints_resume_prune_and_skip_incomplete(tmp_path, debug_ckpt, caplog):
    cfg = make_cfg(
        tmp_path,
        debug_ckpt,
        total_steps=3,
        save_every=1,
        keep_last=2,
        val_every=2,
        val_dataset_config_file=ts.write_mix(tmp_path / "val.yaml", kinds=["edit"]),
        val_batches=1,
        tensorboard=True,
    )
    first = trainer(cfg)
    first.train()
    run = Path(cfg.checkpoint_dir)
    assert sorted(p.name for p in run.glob("step_*")) == ["step_0000002", "step_0000003"]
    assert (run / "train.log").read_text().count("INFO step 3 ") == 1
    assert (run / "train_config.yaml").is_file() and list((run / "tensorboard").iterdir())
    rows = (run / "validation_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,val_ce,val_mse") and [r.split(",")[0] for r in rows[1:]] == ["2"]
    (run / "step_0000003" / "checkpoint.json").unlink()  # as if the process died while finishing it
    cfg.auto_resume, cfg.total_steps = True, 4
    with caplog.at_level(logging.WARNING, logger="unimedvl.train"):
        resumed = trainer(cfg)
    assert "skipping incomplete checkpoint" in caplog.text and "step_0000003" in caplog.text
    assert resumed.step == 2 and resumed.loader.state_dict() == {"next": 2}
    state = resumed.model.state_dict()
    saved = load_file(str(run / "step_0000002" / "model.safetensors"))
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    ema = load_file(str(run / "step_0000002" / "ema.safetensors"))
    assert torch.equal(resumed.ema.state["connector.fc1.weight"], ema["connector.fc1.weight"])


def test_resume_model_only_from_ema_and_lora(tmp_path, debug_ckpt):
    cfg = make_cfg(tmp_path, debug_ckpt, lora_rank=2, lora_alpha=4.0, lr=1e-2, freeze_vit=True)
    t = trainer(cfg)
    t.train()
    base = _initial(debug_ckpt)
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(t.model.state_dict()[q], base[q])  # LoRA keeps the base weights
    step_dir = Path(cfg.checkpoint_dir) / "step_0000002"
    with pytest.raises(CheckpointError, match="a LoRA step directory: merge it"):
        load_model(step_dir)
    from unimedvl.checkpoint.adapters import merge_adapter

    merged_dir = merge_adapter(step_dir, tmp_path / "merged", weights="model")
    merged = load_model(merged_dir).state_dict()
    assert not torch.equal(merged[q], base[q])  # adapters were merged into the release weights
    ema_dir = merge_adapter(step_dir, tmp_path / "merged_ema")
    cfg2 = (
        make_cfg(tmp_path / "b", debug_ckpt, resume_from=str(ema_dir), resume_model_only=True, finetune_from_ema=True)
        if (tmp_path / "b").mkdir() is None
        else None
    )
    t2 = trainer(cfg2)
    ema = load_file(str(ema_dir / "ema.safetensors"))
    assert t2.step == 0 and torch.equal(t2.model.state_dict()[q], ema[q])


def test_medsynth_with_the_real_loader_resumes_exactly(tmp_path, debug_ckpt):
    from unimedvl.medsynth.generator import generate_medsynth

    synth = generate_medsynth(tmp_path / "synth", 8, 1, seed=0, image_size=64)

    def cfg(run, steps, **kw):
        return TrainConfig(
            dataset_config_file=synth["mix"],
            dataset_info_file=synth["dataset_info"],
            model_path=str(debug_ckpt),
            checkpoint_dir=str(tmp_path / run),
            total_steps=steps,
            save_every=1000,
            warmup_steps=0,
            lr=1e-3,
            attn_backend="sdpa",
            ema=0.9,
            gradient_checkpointing=False,
            progress_bar=False,
            tensorboard=False,
            expected_num_tokens=256,
            max_num_tokens=512,
            max_num_tokens_per_sample=512,
            **kw,
        )

    Trainer(cfg("straight", 2)).train()
    Trainer(cfg("split", 1)).train()
    resumed = Trainer(cfg("split", 2, auto_resume=True)).setup()
    assert resumed.step == 1
    resumed.train()
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / "step_0000002" / name))
        b = load_file(str(tmp_path / "split" / "step_0000002" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_cached_latents_train_like_fresh_encodings(tmp_path, debug_ckpt):
    """cache_latents: the frozen encoder's posterior mean is computed once per image, the run is unchanged."""
    from unimedvl.medsynth.generator import generate_medsynth

    synth = generate_medsynth(tmp_path / "synth", 6, 1, seed=0, image_size=64, tasks=["denoising", "t2i"])

    def run(name, **kw):
        cfg = TrainConfig(
            dataset_config_file=synth["mix"],
            dataset_info_file=synth["dataset_info"],
            model_path=str(debug_ckpt),
            checkpoint_dir=str(tmp_path / name),
            total_steps=4,
            save_every=1000,
            warmup_steps=0,
            lr=1e-3,
            attn_backend="sdpa",
            ema=0.0,
            gradient_checkpointing=False,
            progress_bar=False,
            tensorboard=False,
            expected_num_tokens=128,
            max_num_tokens=256,
            max_num_tokens_per_sample=256,
            **kw,
        )
        t = Trainer(cfg).setup()
        losses = [t.train_step()["loss"] for t.step in range(4)]
        return t, losses

    fresh, fresh_losses = run("fresh")
    cached, cached_losses = run("cached", cache_latents=True)
    assert fresh.latent_cache is None
    cache = cached.latent_cache
    assert cache.hits > 0 and len(cache) <= 9  # 6 records, 9 distinct images: each encoded once
    assert cache.misses == len(cache)
    torch.testing.assert_close(torch.tensor(cached_losses), torch.tensor(fresh_losses), rtol=1e-5, atol=1e-6)
    a, b = fresh.model.state_dict(), cached.model.state_dict()
    for key in ("vae2llm.weight", "llm2vae.weight", "time_embedder.mlp.0.weight"):  # what the latents feed
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)


def test_latent_cache_stays_within_its_budget():
    from unimedvl.models.latent_cache import LatentCache

    calls = []

    def encoder(images):
        calls.append(len(images))
        return [image.mean(0).flatten()[:4].clone() for image in images]  # 4 floats = 16 bytes each

    images = [torch.full((3, 4, 4), float(i)) for i in range(3)]
    cache = LatentCache(max_bytes=32)  # room for two latents
    first = cache.encode(images + [images[0].clone()], encoder)
    assert calls == [3] and len(cache) == 2 and cache.bytes == 32  # the repeat is encoded once
    assert torch.equal(first[3], first[0])
    again = cache.encode(images, encoder)
    assert calls == [3, 1]  # the third image did not fit: encoded again
    assert all(torch.equal(x, y) for x, y in zip(again, first[:3]))
    assert cache.hits == 3 and cache.misses == 4 and cache.hit_rate == 3 / 7
