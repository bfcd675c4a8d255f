"""Fast sampling: ODE solvers and step caches around the reference Euler sampler (unimedvl.sampling.flow).

The options are fields of :class:`unimedvl.guidance.GuidanceConfig` (``solver``, ``cache`` and its
knobs); :func:`sample` runs them and falls back to :func:`unimedvl.sampling.flow.euler_sample`, bit for bit,
for the reference settings.
"""

from unimedvl.sampling.cache import CACHES, new_cache, newton_forecast
from unimedvl.sampling.sampler import is_reference, sample
from unimedvl.sampling.solvers import STEPS, evaluations

__all__ = ["CACHES", "STEPS", "evaluations", "is_reference", "new_cache", "newton_forecast", "sample"]
