import pytest
import torch

from unimedvl.errors import ConfigError
from unimedvl.sampling.flow import (
    GuidanceConfig,
    combine_guidance,
    estimate_clean,
    euler_sample,
    interpolate,
    sample_timesteps,
    sampling_schedule,
    shift_timesteps,
    start_from_image,
    velocity_target,
)


def test_shift_formula_and_endpoints():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = 3.0
    assert torch.allclose(shift_timesteps(t, s), s * t / (1 + (s - 1) * t))
    assert shift_timesteps(t, 1.0) is t
    sched = sampling_schedule(5, 3.0)
    assert sched[0] == 1.0 and sched[-1] == 0.0 and torch.all(sched[:-1] > sched[1:])


def test_logit_normal_timesteps():
    g = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, generator=g)
    assert 0 < t.min() and t.max() < 1
    assert abs(t.median().item() - 0.5) < 0.02  # sigmoid of a centred normal
    t3 = sample_timesteps(20000, shift=3.0, generator=torch.Generator().manual_seed(0))
    assert t3.median() > 0.7


def test_interpolation_velocity_and_clean_estimate():
    x0, eps = torch.randn(4, 8), torch.randn(4, 8)
    t = torch.rand(4, 1)
    x_t = interpolate(x0, eps, t)
    v = velocity_target(x0, eps)
    assert torch.allclose(estimate_clean(x_t, v, t), x0, atol=1e-6)
    assert torch.allclose(interpolate(x0, eps, torch.zeros(4, 1)), x0)
    assert torch.allclose(interpolate(x0, eps, torch.ones(4, 1)), eps)


def test_euler_reaches_analytic_answer():
    # Data is a single point c: the exact velocity at (x, t) is (x - c) / t along straight paths.
    c = torch.randn(10, 4)
    noise = torch.randn(10, 4)
    cfg = GuidanceConfig(cfg_text_scale=1.0, num_timesteps=7, timestep_shift=3.0)

    def velocity(x, t, branches):
        return {"cond": (x - c) / t[:, None]}

    out = euler_sample(velocity, noise, [6, 4], cfg)
    assert torch.allclose(out, c, atol=1e-5)


def test_strength_keeps_the_schedule_below_it_and_one_is_the_full_schedule():
    for shift in (1.0, 3.0):
        assert torch.equal(sampling_schedule(9, shift, strength=1.0), sampling_schedule(9, shift))
    torch.testing.assert_close(sampling_schedule(11, 1.0, strength=0.45), torch.tensor([0.45, 0.4, 0.3, 0.2, 0.1, 0.0]))
    shifted = sampling_schedule(11, 3.0, strength=0.45)
    torch.testing.assert_close(shifted, shift_timesteps(torch.tensor([0.45, 0.4, 0.3, 0.2, 0.1, 0.0]), 3.0))
    assert len(sampling_schedule(11, 1.0, strength=0.01)) == 2  # always at least one step
    for bad in (0.0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError, match="strength"):
            sampling_schedule(5, 1.0, strength=bad)


def test_start_from_image_noises_the_latent_to_the_first_time():
    latent, noise = torch.randn(6, 4), torch.randn(6, 4)
    assert start_from_image(latent, noise, 1.0, 3.0) is noise
    t0 = 3.0 * 0.3 / (1 + 2.0 * 0.3)
    torch.testing.assert_close(start_from_image(latent, noise, 0.3, 3.0), (1 - t0) * latent + t0 * noise)


def test_euler_from_a_noised_input_reaches_the_data_in_the_kept_steps():
    c = torch.randn(10, 4)
    cfg = GuidanceConfig(cfg_text_scale=1.0, num_timesteps=21, timestep_shift=3.0)
    calls = []

    def velocity(x, t, branches):
        calls.append(float(t[0]))
        return {"cond": (x - c) / t[:, None]}

    start = start_from_image(torch.randn(10, 4), torch.randn(10, 4), 0.5, cfg.timestep_shift)
    out = euler_sample(velocity, start, [10], cfg, strength=0.5)
    assert torch.allclose(out, c, atol=1e-5)
    assert len(calls) == 10 and calls[0] == pytest.approx(float(shift_timesteps(torch.tensor(0.5), 3.0)))


def test_guidance_scale_one_is_unguided():
    x = torch.randn(12, 4)
    calls = []

    def velocity(x, t, branches):
        calls.append(branches)
        return {b: x * (i + 1) for i, b in enumerate(branches)}

    guided = euler_sample(velocity, x, [12], GuidanceConfig(cfg_text_scale=1.0, cfg_img_scale=1.0, num_timesteps=4))
    assert all(b == ("cond",) for b in calls)
    empty = GuidanceConfig(cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(1.0, 1.0), num_timesteps=4)
    calls.clear()
    unguided = euler_sample(velocity, x, [12], empty)
    assert all(b == ("cond",) for b in calls)
    assert torch.equal(guided, unguided)


@pytest.mark.parametrize("renorm", ["global", "channel", "text_channel"])
def test_guidance_is_per_sample(renorm):
    cfg = GuidanceConfig(cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_renorm_type=renorm, cfg_renorm_min=0.0)
    v = {k: torch.randn(8, 6) for k in ("cond", "text_uncond", "img_uncond")}
    seg = torch.tensor([0] * 5 + [1] * 3)
    both = combine_guidance(v, cfg, seg, 2)
    first = combine_guidance({k: t[:5] for k, t in v.items()}, cfg, torch.zeros(5, dtype=torch.long), 1)
    second = combine_guidance({k: t[5:] for k, t in v.items()}, cfg, torch.zeros(3, dtype=torch.long), 1)
    assert torch.allclose(both, torch.cat([first, second]), atol=1e-6)


def test_guidance_formula_and_global_renorm():
    cfg = GuidanceConfig(cfg_text_scale=3.0, cfg_img_scale=2.0, cfg_renorm_type="global", cfg_renorm_min=0.0)
    v = {k: torch.randn(4, 3) for k in ("cond", "text_uncond", "img_uncond")}
    v_txt = v["text_uncond"] + 3.0 * (v["cond"] - v["text_uncond"])
    raw = v["img_uncond"] + 2.0 * (v_txt - v["img_uncond"])
    factor = min(v["cond"].norm() / raw.norm(), 1.0)
    out = combine_guidance(v, cfg, torch.zeros(4, dtype=torch.long), 1)
    assert torch.allclose(out, raw * factor, atol=1e-6)
    assert out.norm() <= v["cond"].norm() + 1e-5


def test_bad_settings():
    with pytest.raises(ConfigError, match="cfg_renorm_type"):
        GuidanceConfig(cfg_renorm_type="none")
    with pytest.raises(ConfigError, match="num_timesteps"):
        GuidanceConfig(num_timesteps=1)


def test_a_scale_below_one_warns_once_and_image_without_text_guidance_is_explained(monkeypatch):
    import warnings

    from unimedvl import guidance

    monkeypatch.setattr(guidance, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GuidanceConfig(cfg_text_scale=0.5)
        GuidanceConfig(cfg_text_scale=0.7)  # the same notice is not repeated
        GuidanceConfig(cfg_text_scale=1.0, cfg_img_scale=2.0)
        GuidanceConfig(cfg_text_scale=4.0, cfg_img_scale=2.0)  # the presets say nothing
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert "below 1" in messages[0] and "turns that guidance off" in messages[0]
    assert "cfg_img_scale=2 has no effect while cfg_text_scale=1" in messages[1]
