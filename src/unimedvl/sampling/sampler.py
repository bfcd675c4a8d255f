"""The sampling loop with a solver and a step cache: the fast settings of ``GuidanceConfig``.

:func:`sample` is what inference calls. With the reference settings (``solver="euler"``,
``cache="none"``) it is :func:`unimedvl.sampling.flow.euler_sample`, bit for bit. Otherwise the loop below
runs: the solver (:mod:`unimedvl.sampling.solvers`) asks for the guided velocity at its
evaluation points, and each evaluation goes

1. every request's cache (:mod:`unimedvl.sampling.cache`, one per request) decides *once* whether
   to compute its guidance branches at this point (TeaCache looks at the embedded input first);
2. the requests that compute go through the model together, in one call, with every branch
   the step needs (``velocity(x, t, branches, members=...)``);
3. the others take their estimates (reused or forecast) of all branches from their cache;
4. the guidance formula (:func:`unimedvl.sampling.flow.combine_guidance`) combines the branches of each
   request, as uncached sampling does.

So an evaluation that is computed gives exactly the uncached guided velocity, and each request's
result does not depend on the others in the batch (to fp32 round-off of batched products).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from unimedvl.errors import ConfigError
from unimedvl.sampling.cache import new_cache
from unimedvl.sampling.flow import GuidanceConfig, VelocityFn, combine_guidance, euler_sample, sampling_schedule
from unimedvl.sampling.solvers import STEPS


def is_reference(cfg: GuidanceConfig) -> bool:
    """Whether ``cfg`` samples like the reference (Euler, no cache)."""
    return cfg.solver == "euler" and cfg.cache == "none"


def sample(
    velocity: VelocityFn,
    start: Tensor,
    token_counts: Sequence[int],
    cfg: GuidanceConfig,
    progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
) -> tuple[Tensor, list[int]]:
    """Integrate from ``start`` to t = 0; returns the latents and each request's model passes.

    Arguments as :func:`unimedvl.sampling.flow.euler_sample`. A model pass is one branch of one request
    through the model (a guided step with three branches is three passes). ``velocity`` may take
    ``members=`` (indexes of the requests to evaluate, x and t holding their tokens only) and
    offer ``step_input(x, t)`` (the embedded input TeaCache watches; without it, x is watched).
    """
    counts = list(token_counts)
    n = len(counts)
    device = start.device
    schedule = sampling_schedule(cfg.num_timesteps, cfg.timestep_shift, device=device, strength=strength)
    if is_reference(cfg):
        per_request = sum(len(cfg.branches_at(float(t))) for t in schedule[:-1])
        return euler_sample(velocity, start, counts, cfg, progress, strength=strength), [per_request] * n
    seg_ids = torch.repeat_interleave(torch.arange(n, device=device), torch.tensor(counts, device=device))
    if seg_ids.numel() != start.shape[0]:
        raise ConfigError(f"token_counts sum to {seg_ids.numel()} but the start has {start.shape[0]} tokens")
    bounds = [0] + torch.tensor(counts).cumsum(0).tolist()
    caches = [new_cache(cfg) for _ in range(n)]
    passes = [0] * n
    takes_members = getattr(velocity, "takes_members", False)

    def guided(x: Tensor, t: Tensor, final: bool) -> Tensor:
        branches = cfg.branches_at(float(t))
        parts = [x[bounds[i] : bounds[i + 1]] for i in range(n)]
        signals: list[Tensor | None] = [None] * n
        if caches[0].needs_signal:
            watched = velocity.step_input(x, t.expand(x.shape[0])) if hasattr(velocity, "step_input") else x
            signals = [watched[bounds[i] : bounds[i + 1]] for i in range(n)]
        # 1. one decision per request, for all of its branches
        compute = [c.should_compute(float(t), branches, final, s) for c, s in zip(caches, signals)]
        members = [i for i in range(n) if compute[i]]
        # 2. the computing requests through the model together
        fresh: dict[str, list[Tensor]] = {}
        if members:
            if takes_members and len(members) < n:
                xs = torch.cat([parts[i] for i in members])
                out = velocity(xs, t.expand(xs.shape[0]), branches, members=members)
                sizes = [counts[i] for i in members]
                fresh = {b: list(out[b].split(sizes)) for b in branches}
            else:
                out = velocity(x, t.expand(x.shape[0]), branches)
                fresh = {b: [out[b][bounds[i] : bounds[i + 1]] for i in members] for b in branches}
        # 3. the others from their caches; 4. the guidance formula on branches of the same step
        values: dict[str, list[Tensor]] = {b: [] for b in branches}
        for i in range(n):
            if compute[i]:
                mine = {b: fresh[b][members.index(i)] for b in branches}
                caches[i].store(float(t), mine)
                passes[i] += len(branches)
            else:
                mine = caches[i].estimate(float(t), branches)
            for b in branches:
                values[b].append(mine[b])
        return combine_guidance({b: torch.cat(v) for b, v in values.items()}, cfg, seg_ids, n)

    step = STEPS[cfg.solver]
    state: dict = {}
    x = start
    steps = len(schedule) - 1
    for i in range(steps):
        x = step(guided, x, schedule[i], schedule[i + 1], state, final=i == steps - 1)
        if progress is not None:
            progress(i + 1, steps)
    return x, passes
