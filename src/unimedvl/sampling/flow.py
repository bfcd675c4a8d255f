"""Flow matching: the maths of training targets and of the Euler sampler with guidance.

Convention (spec section 4): t = 0 is data, t = 1 is noise; x_t = (1 - t) x0 + t eps and the
network predicts the velocity v = eps - x0. Sampling integrates dx/dt = v from t = 1 to 0.

Kept apart from the network (as in SiT/DiT): nothing here knows about transformers; the sampler
receives a ``velocity`` callable that evaluates the guidance branches it asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from unimedvl.errors import ConfigError

# Guidance settings and the task presets live in the torch-free guidance module (the CLI builds its
# flags from them before torch is imported); re-exported here beside the maths that uses them.
from unimedvl.guidance import (  # noqa: E402,F401
    BRANCHES,
    EDITING,
    GUIDANCE_PRESETS,
    RENORM_TYPES,
    RESTORATION,
    TASK_GUIDANCE,
    TEXT_TO_IMAGE,
    GuidanceConfig,
    check_strength,
)

# ---------------------------------------------------------------------------------------------
# Training.


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """t' = s t / (1 + (s - 1) t): s > 1 moves time towards noise (t = 1)."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_timesteps(n: int, shift: float = 1.0, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Logit-normal timesteps: t = sigmoid(N(0, 1)), then shifted. Shape (n,)."""
    t_raw = torch.randn(n, generator=generator, device=device)
    return shift_timesteps(torch.sigmoid(t_raw), shift)


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t eps; ``t`` broadcasts against x0 (e.g. (N, 1) per token)."""
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The regression target v = eps - x0 ("data to noise")."""
    return noise - x0


def estimate_clean(x_t: Tensor, velocity: Tensor, t: Tensor) -> Tensor:
    """x0_hat = x_t - t v_hat (used by pixel losses)."""
    return x_t - t * velocity


# ---------------------------------------------------------------------------------------------
# Sampling.


def sampling_schedule(num_timesteps: int, shift: float, device=None, strength: float = 1.0) -> Tensor:
    """Shifted time points from ``shift(strength)`` to 0.

    ``strength`` 1 gives all ``num_timesteps`` points from 1 to 0. A smaller strength (SDEdit-style
    restoration, :func:`start_from_image`) keeps the part of the same schedule that lies below it:
    ``strength`` itself, then the points of ``linspace(1, 0, num_timesteps)`` under it, all shifted.
    So the sampler runs about ``strength * (num_timesteps - 1)`` steps, and at least one.
    """
    check_strength(strength)
    raw = torch.linspace(1.0, 0.0, num_timesteps, device=device)
    if strength < 1.0:
        raw = torch.cat([torch.tensor([float(strength)], device=device), raw[raw < strength]])
    return shift_timesteps(raw, shift)


def start_from_image(latent: Tensor, noise: Tensor, strength: float, shift: float) -> Tensor:
    """The sampler's start for ``strength``: the input's latent noised to the schedule's first time.

    x = (1 - t0) latent + t0 noise with t0 = shift(strength); at strength 1 this is the noise itself
    (returned as it is, so pure-noise sampling stays bit-identical).
    """
    check_strength(strength)
    if strength >= 1.0:
        return noise
    t0 = float(shift_timesteps(torch.tensor(float(strength)), shift))
    return interpolate(latent, noise, t0)


def _segment_norm(x: Tensor, seg_ids: Tensor, n_seg: int) -> Tensor:
    """Per-token value of the L2 norm of its segment: x (N, D), seg_ids (N,) -> (N, 1)."""
    sq = torch.zeros(n_seg, dtype=x.dtype, device=x.device).index_add_(0, seg_ids, x.pow(2).sum(-1))
    return sq.sqrt()[seg_ids].unsqueeze(-1)


def combine_guidance(v: dict[str, Tensor], cfg: GuidanceConfig, seg_ids: Tensor, n_seg: int) -> Tensor:
    """Guided velocity from the branches in ``v`` (tokens packed: (N, D); seg_ids maps tokens to samples).

    Renorm is computed per sample (``global``: the whole image of that sample; ``channel`` and
    ``text_channel``: per token), so a batch gives the same result as its samples one by one.
    """
    v_cond = v["cond"]
    if "text_uncond" not in v and "img_uncond" not in v:
        return v_cond
    eps = 1e-8
    v_txt = v_cond
    if "text_uncond" in v:
        v_txt = v["text_uncond"] + cfg.cfg_text_scale * (v_cond - v["text_uncond"])
    if cfg.cfg_renorm_type == "text_channel":
        factor = v_cond.norm(dim=-1, keepdim=True) / (v_txt.norm(dim=-1, keepdim=True) + eps)
        v_txt = v_txt * factor.clamp(min=cfg.cfg_renorm_min, max=1.0)
    out = v_txt
    if "img_uncond" in v:
        out = v["img_uncond"] + cfg.cfg_img_scale * (v_txt - v["img_uncond"])
    if cfg.cfg_renorm_type == "text_channel":
        return out
    if cfg.cfg_renorm_type == "global":
        factor = _segment_norm(v_cond, seg_ids, n_seg) / (_segment_norm(out, seg_ids, n_seg) + eps)
    else:  # channel
        factor = v_cond.norm(dim=-1, keepdim=True) / (out.norm(dim=-1, keepdim=True) + eps)
    return out * factor.clamp(min=cfg.cfg_renorm_min, max=1.0)


VelocityFn = Callable[[Tensor, Tensor, tuple[str, ...]], dict[str, Tensor]]


def euler_sample(
    velocity: VelocityFn,
    noise: Tensor,
    token_counts: Sequence[int],
    cfg: GuidanceConfig,
    progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Integrate from noise (t = 1) to data (t = 0) with Euler steps and guidance.

    ``noise``: (N, D) packed tokens of every image; ``token_counts``: tokens per image.
    ``velocity(x, t_per_token, branches)`` returns a dict of (N, D) velocities, one per branch
    name; evaluating the branches together (one batched forward) is up to the callable.
    ``strength`` < 1: ``noise`` is the noised input (:func:`start_from_image`) and only the part of
    the schedule below ``strength`` is run (:func:`sampling_schedule`).
    """
    device = noise.device
    seg_ids = torch.repeat_interleave(
        torch.arange(len(token_counts), device=device), torch.tensor(list(token_counts), device=device)
    )
    if seg_ids.numel() != noise.shape[0]:
        raise ConfigError(f"token_counts sum to {seg_ids.numel()} but noise has {noise.shape[0]} tokens")
    schedule = sampling_schedule(cfg.num_timesteps, cfg.timestep_shift, device=device, strength=strength)
    x = noise
    steps = len(schedule) - 1
    for i in range(steps):
        t, t_next = schedule[i], schedule[i + 1]
        branches = cfg.branches_at(float(t))
        v = velocity(x, t.expand(x.shape[0]), branches)
        v_guided = combine_guidance(v, cfg, seg_ids, len(token_counts))
        x = x - v_guided * (t - t_next)
        if progress is not None:
            progress(i + 1, steps)
    return x
