"""Fast sampling (unimedvl.sampling): step caches keep guidance exact, solvers converge, bad options."""

import dataclasses

import pytest
import torch

from unimedvl import sampling
from unimedvl.errors import ConfigError
from unimedvl.sampling import newton_forecast, sample
from unimedvl.sampling.flow import GuidanceConfig, euler_sample

BRANCH_SHIFT = {"cond": 0.0, "text_uncond": 0.3, "img_uncond": -0.2}


class TokenwiseVelocity:
    """A fake model: each token's velocity depends on its own value and t only (so a subset of the
    requests gives the same numbers as all of them); records what it was asked."""

    takes_members = True

    def __init__(self, curve=1.0):
        self.calls = []
        self.curve = curve

    def __call__(self, x, t, branches, members=None):
        self.calls.append((float(t[0]), tuple(branches), None if members is None else tuple(members)))
        return {b: torch.sin(self.curve * x) * (1 + t[:, None]) + BRANCH_SHIFT[b] * t[:, None] ** 2 for b in branches}


def _cfg(**kw):
    base = dict(
        cfg_text_scale=4.0, cfg_img_scale=2.0, cfg_interval=(0.0, 1.0), cfg_renorm_type="text_channel", num_timesteps=12
    )
    return GuidanceConfig(**{**base, **kw})


def test_reference_settings_are_euler_sample_bit_for_bit():
    cfg = _cfg()
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    out, passes = sample(TokenwiseVelocity(), x, [6, 4], cfg)
    assert torch.equal(out, euler_sample(TokenwiseVelocity(), x, [6, 4], cfg))
    assert passes == [3 * 11, 3 * 11]


@pytest.mark.parametrize("cache", ["teacache", "taylorseer"])
def test_a_cache_that_computes_every_step_gives_the_uncached_result_exactly(cache):
    # threshold tiny / interval 1: every evaluation is computed, through the cache loop
    cfg = _cfg(cache=cache, cache_threshold=1e-9, cache_interval=1)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    out, passes = sample(TokenwiseVelocity(), x, [6, 4], cfg)
    assert torch.equal(out, euler_sample(TokenwiseVelocity(), x, [6, 4], cfg))
    assert passes == [33, 33]


def test_a_reused_step_combines_branches_of_one_computed_step(monkeypatch):
    cfg = _cfg(cache="teacache", cache_threshold=0.5, cache_warmup=1, num_timesteps=20)
    velocity = TokenwiseVelocity()
    outputs = []  # every branch tensor the model returned
    original = velocity.__call__

    class Spy(TokenwiseVelocity):
        def __call__(self, x, t, branches, members=None):
            out = original(x, t, branches, members)
            outputs.append(out)
            return out

    combined = []
    real_combine = sampling.sampler.combine_guidance

    def spy_combine(v, cfg_, seg_ids, n_seg):
        combined.append(v)
        return real_combine(v, cfg_, seg_ids, n_seg)

    monkeypatch.setattr(sampling.sampler, "combine_guidance", spy_combine)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    _, passes = sample(Spy(), x, [6], cfg)
    assert passes[0] < 3 * 19  # some steps were reused
    for v in combined:  # one request: all of its branches come from the same model call
        sources = {next(k for k, out in enumerate(outputs) if torch.equal(out[b], v[b])) for b in v}
        assert len(sources) == 1
    # a computed step gives exactly the uncached combination of that call's branches
    seg = torch.zeros(6, dtype=torch.long)
    assert any(torch.equal(real_combine(v, cfg, seg, 1), real_combine(outputs[0], cfg, seg, 1)) for v in combined)


def test_a_request_without_guidance_has_one_branch_and_caches_it_alone():
    cfg = _cfg(cfg_text_scale=1.0, cfg_img_scale=1.0, cache="taylorseer", cache_interval=3)
    velocity = TokenwiseVelocity()
    x = torch.randn(6, 4)
    _, passes = sample(velocity, x, [6], cfg)
    assert {c[1] for c in velocity.calls} == {("cond",)}
    assert passes == [len(velocity.calls)] and passes[0] < 11


@pytest.mark.parametrize("cache", ["teacache", "taylorseer"])
def test_each_request_in_a_batch_keeps_its_own_cache(cache):
    cfg = _cfg(cache=cache, cache_threshold=0.05, cache_interval=2, num_timesteps=16)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(6, 4, generator=g), 5 * torch.randn(4, 4, generator=g)
    velocity = TokenwiseVelocity()
    both, passes = sample(velocity, torch.cat([a, b]), [6, 4], cfg)
    alone_a, passes_a = sample(TokenwiseVelocity(), a, [6], cfg)
    alone_b, passes_b = sample(TokenwiseVelocity(), b, [4], cfg)
    torch.testing.assert_close(both, torch.cat([alone_a, alone_b]), atol=1e-6, rtol=0)
    assert passes == passes_a + passes_b and max(passes) < 45
    if cache == "teacache":  # different inputs change at different rates: some steps ran one request only
        assert passes_a != passes_b and any(c[2] is not None and len(c[2]) == 1 for c in velocity.calls)


def test_taylorseer_forecasts_a_linear_drift_exactly():
    # v = a + b t per branch: a first-order forecast is exact, so skipping costs nothing
    a, b = torch.randn(5, 3), torch.randn(5, 3)

    def velocity(x, t, branches):
        return {br: a + b * t[:, None] + BRANCH_SHIFT[br] for br in branches}

    cfg = _cfg(cfg_renorm_type="channel", cfg_renorm_min=1.0, cache="taylorseer", cache_interval=3, num_timesteps=20)
    x = torch.randn(5, 3)
    fast, passes = sample(velocity, x, [5], cfg)
    torch.testing.assert_close(fast, euler_sample(velocity, x, [5], cfg), atol=1e-5, rtol=1e-5)
    assert passes[0] <= 3 * 9


def test_heun_with_a_forecasting_cache_stays_close_to_heun():
    # warmup 3 computes Heun's corrector at t1 and the next predictor at t1: one t, two evaluations
    cfg = GuidanceConfig(cfg_text_scale=1.0, num_timesteps=16, solver="heun")
    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
    exact, _ = sample(_gaussian_velocity(0.5), x1, [8], cfg)
    fast, passes = sample(
        _gaussian_velocity(0.5), x1, [8], dataclasses.replace(cfg, cache="taylorseer", cache_order=2, cache_warmup=3)
    )
    assert torch.isfinite(fast).all() and passes[0] < 30 and float((fast - exact).abs().max()) < 0.05


def test_newton_forecast_reproduces_a_parabola():
    times = [0.9, 0.7, 0.4]
    values = [torch.tensor([2 * u * u - u + 1]) for u in times]
    assert torch.allclose(newton_forecast(times, values, 0.2), torch.tensor([2 * 0.04 - 0.2 + 1]))
    assert torch.equal(newton_forecast([0.5], [torch.tensor([3.0])], 0.1), torch.tensor([3.0]))


def _gaussian_velocity(s):
    """The exact flow velocity for data N(0, s^2): the ODE maps noise x1 to x0 = s x1."""

    def velocity(x, t, branches):
        tt = t[:, None]
        return {b: x * (tt - (1 - tt) * s * s) / ((1 - tt) ** 2 * s * s + tt * tt) for b in branches}

    return velocity


def test_second_order_solvers_beat_euler_at_few_steps():
    s, x1 = 0.2, torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    errors, passes = {}, {}
    for solver in ("euler", "heun", "dpm++2m"):
        cfg = GuidanceConfig(cfg_text_scale=1.0, num_timesteps=10, timestep_shift=3.0, solver=solver)
        out, p = sample(_gaussian_velocity(s), x1, [8], cfg)
        errors[solver], passes[solver] = float((out - s * x1).abs().max()), p[0]
    assert errors["heun"] < errors["euler"] / 4 and errors["dpm++2m"] < errors["euler"] / 2
    assert passes == {"euler": 9, "heun": 18, "dpm++2m": 9}


def test_dpm_first_step_and_heun_at_sdedit_strength_run():
    cfg = GuidanceConfig(cfg_text_scale=1.0, num_timesteps=10, solver="dpm++2m")
    x1 = torch.randn(4, 2)
    out, passes = sample(_gaussian_velocity(0.5), x1, [4], cfg, strength=0.5)
    assert torch.isfinite(out).all() and passes[0] == 5
    _, passes = sample(_gaussian_velocity(0.5), x1, [4], dataclasses.replace(cfg, solver="heun"), strength=0.5)
    assert passes[0] == 10


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"solver": "rk4"}, ["solver='rk4'", "euler, heun, dpm++2m"]),
        ({"cache": "fast"}, ["cache='fast'", "none, teacache, taylorseer"]),
        ({"cache_threshold": 0.0}, ["cache_threshold=0.0", "(0, 1]"]),
        ({"cache_threshold": 3.0}, ["cache_threshold=3.0", "(0, 1]"]),
        ({"cache_interval": 0}, ["cache_interval=0", "from 1 to 10"]),
        ({"cache_order": 3}, ["cache_order=3", "from 1 to 2"]),
        ({"solver": "dpm++2m", "num_timesteps": 2}, ["num_timesteps=2", "dpm++2m", "at least 3"]),
    ],
)
def test_bad_speed_options_are_one_line_naming_the_option(kw, words):
    with pytest.raises(ConfigError) as err:
        GuidanceConfig(**kw)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_a_checkpoint_may_carry_a_fast_preset_next_to_the_reference(tmp_path):
    import json

    from unimedvl.checkpoint.inference_config import INFERENCE_CONFIG_FILE, InferenceConfig

    (tmp_path / INFERENCE_CONFIG_FILE).write_text(
        json.dumps({"guidance": {"editing_fast": {"solver": "dpm++2m", "num_timesteps": 16, "cache": "taylorseer"}}})
    )
    config = InferenceConfig.load(tmp_path)
    fast, reference = config.preset("edit_fast"), config.preset("edit")
    assert (fast.solver, fast.num_timesteps, fast.cache, fast.cfg_img_scale) == ("dpm++2m", 16, "taylorseer", 2.0)
    assert (reference.solver, reference.cache, reference.num_timesteps) == ("euler", "none", 50)
    assert InferenceConfig.load(tmp_path).to_json()["guidance"]["editing_fast"]["solver"] == "dpm++2m"
    with pytest.raises(ConfigError, match="no fast preset 'text_to_image_fast'"):
        config.preset("generate_fast")
    (tmp_path / INFERENCE_CONFIG_FILE).write_text(json.dumps({"guidance": {"editing_fast": {"cache": "fastest"}}}))
    with pytest.raises(ConfigError, match="cache='fastest'; choose one of none, teacache, taylorseer"):
        InferenceConfig.load(tmp_path)


def test_every_front_end_speaks_the_speed_options(capsys):
    from unimedvl.api.schemas import ImageRequest
    from unimedvl.cli import build_parser
    from unimedvl.eval.runner.batch import EvalSettings
    from unimedvl.guidance import RESTORATION

    for command in ("edit", "generate", "eval"):
        args = build_parser(command).parse_args(
            [command, "--model", "m", "--solver", "dpm++2m", "--cache", "taylorseer", "--cache-interval", "4"]
            + {
                "edit": ["--image", "a.png", "--instruction", "x", "--out", "o.png"],
                "generate": ["--prompt", "x", "--out", "o.png"],
                "eval": ["--data", "d.jsonl", "--out", "o"],
            }[command]
        )
        assert (args.solver, args.cache, args.cache_interval) == ("dpm++2m", "taylorseer", 4), command
    with pytest.raises(SystemExit):
        build_parser("edit").parse_args(["edit", "--cache", "fastest"])
    err = capsys.readouterr().err
    assert "argument --cache: invalid choice: 'fastest'" in err and "taylorseer" in err
    body = ImageRequest(prompt="x", solver="heun", cache="teacache", cache_threshold=0.2)
    assert body.guidance_overrides() == {"solver": "heun", "cache": "teacache", "cache_threshold": 0.2}
    settings = EvalSettings(guidance=dataclasses.replace(RESTORATION, cache="teacache")).to_json()
    assert (settings["cache"], settings["solver"]) == ("teacache", "euler")  # recorded in run_info / provenance
