"""Solvers and step caches through the Inferencer on the debug checkpoint (unimedvl.sampling)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from inference_support import random_image

from unimedvl.errors import ConfigError
from unimedvl.inference.inferencer import Request
from unimedvl.sampling.flow import GuidanceConfig

EDIT = GuidanceConfig(4.0, 2.0, (0.0, 1.0), "text_channel", 0.0, 3.0, 12)
GENERATE = GuidanceConfig(4.0, 1.0, (0.4, 1.0), "global", 0.0, 3.0, 12)


def _requests(guidance, strength=1.0):
    return [
        Request([random_image(32, 32, 11), "Remove the noise."], "edit", guidance=guidance, seed=1, strength=strength),
        Request([random_image(32, 48, 12), "Sharpen it."], "edit", guidance=guidance, seed=2, strength=strength),
        Request(
            ["A chest X-ray."], "generate", guidance=replace(GENERATE, **_speed(guidance)), height=32, width=32, seed=3
        ),
    ]


def _speed(guidance):
    return {
        k: getattr(guidance, k)
        for k in ("solver", "cache", "cache_threshold", "cache_interval", "cache_order", "cache_warmup")
    }


def _pixels(results):
    return [np.asarray(r.image).astype(int) for r in results]


def test_a_cache_computing_every_step_gives_the_reference_images_and_passes(api):
    inf = api.inferencer
    reference = inf.run(_requests(EDIT))
    cached = inf.run(_requests(replace(EDIT, cache="taylorseer", cache_interval=1)))
    for a, b in zip(_pixels(reference), _pixels(cached)):
        np.testing.assert_array_equal(a, b)
    # edit: 3 branches x 11 steps; generate: text guidance while t > 0.4 only
    assert [r.model_passes for r in reference] == [r.model_passes for r in cached]
    assert reference[0].model_passes == 33 and 11 < reference[2].model_passes < 33


@pytest.mark.parametrize(
    "speed",
    [
        dict(cache="teacache", cache_threshold=0.3),
        dict(cache="taylorseer", cache_interval=3, cache_order=2),
        dict(solver="dpm++2m", cache="taylorseer", cache_interval=2),
    ],
)
def test_each_request_keeps_its_own_cache_in_a_batch(api, speed):
    inf = api.inferencer
    guidance = replace(EDIT, **speed)
    together = inf.run(_requests(guidance))
    alone = [inf.run([r])[0] for r in _requests(guidance)]
    for a, b in zip(_pixels(together), _pixels(alone)):
        assert np.abs(a - b).max() <= 1  # fp32 round-off of batched products: at most one grey level
    assert [r.model_passes for r in together] == [r.model_passes for r in alone]
    assert together[0].model_passes < 33 and together[2].model_passes < inf.run(_requests(EDIT))[2].model_passes


def test_heun_and_a_cache_with_sdedit_strength(api):
    inf = api.inferencer
    for speed in (dict(solver="heun"), dict(cache="teacache", cache_threshold=0.5)):
        results = inf.run(_requests(replace(EDIT, **speed), strength=0.5)[:2])
        assert all(r.image.size == (w, 32) for r, w in zip(results, (32, 48)))
        steps = 6  # strength 0.5 of 12 points
        passes = [r.model_passes for r in results]
        # heun: 2 evaluations a step, 3 branches each, but guidance is off at t = 0 (the last corrector)
        assert passes == [3 * (2 * steps - 1) + 1] * 2 if "solver" in speed else max(passes) < 3 * steps, passes


def test_python_api_takes_the_speed_options_and_refuses_bad_ones(api):
    image = random_image(32, 32, 13)
    fast = api.edit(image, "Remove the noise.", seed=5, num_timesteps=12, solver="dpm++2m", cache="teacache")
    assert fast.size == (32, 32)
    with pytest.raises(ConfigError, match="cache='fastest'; choose one of none, teacache, taylorseer"):
        api.edit(image, "Remove the noise.", cache="fastest")
    with pytest.raises(ConfigError, match="num_timesteps=2 is too few for solver='heun'"):
        api.generate("A chest X-ray.", num_timesteps=2, solver="heun")


@torch.no_grad()
def test_guided_velocity_of_some_requests_equals_their_rows_of_all(api):
    inf = api.inferencer
    plan = inf.prepare(_requests(EDIT)[:2])
    from unimedvl.inference.velocity import GuidedVelocity

    velocity = GuidedVelocity(plan.pool, [(j.full, j.cfg_text, j.cfg_img) for j in plan.jobs], [(2, 2), (2, 3)])
    x = torch.randn(10, inf.model.config.patch_latent_dim)
    t = torch.full((10,), 0.6)
    branches = ("cond", "text_uncond", "img_uncond")
    everyone = velocity(x, t, branches)
    second = velocity(x[4:], t[4:], branches, members=[1])
    for b in branches:
        torch.testing.assert_close(second[b], everyone[b][4:], atol=1e-5, rtol=0)
    assert velocity.step_input(x, t).shape[0] == 10


FAST = dict(num_timesteps=12, solver="dpm++2m", cache="teacache", cache_threshold=0.3)


def test_a_memory_plan_samples_the_same_fast_images(api, checkpoint):
    from inference_support import SMALL

    from unimedvl.inference.api import UniMedVL

    mapped = UniMedVL.from_pretrained(
        checkpoint, device="cpu", dtype="fp32", device_map='{"0": "cpu", "1": "cpu"}', **SMALL
    )
    image = random_image(32, 32, 14)
    np.testing.assert_array_equal(
        np.asarray(mapped.edit(image, "Remove the noise.", seed=2, **FAST)),
        np.asarray(api.edit(image, "Remove the noise.", seed=2, **FAST)),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_sampling_on_cuda_agrees_with_the_cpu(api, checkpoint):
    from inference_support import SMALL

    from unimedvl.inference.api import UniMedVL

    image = random_image(32, 32, 15)
    fast = dict(FAST, cache="taylorseer", cache_interval=2)  # a fixed schedule: round-off cannot flip a decision
    cpu = np.asarray(api.edit(image, "Remove the noise.", seed=3, **fast)).astype(int)
    for plan in ({}, {"offload": "cpu"}):
        gpu = UniMedVL.from_pretrained(checkpoint, device="cuda", dtype="fp32", **plan, **SMALL)
        out = np.asarray(gpu.edit(image, "Remove the noise.", seed=3, **fast)).astype(int)
        assert np.abs(out - cpu).mean() < 1.0  # TF32 / kernel round-off only
