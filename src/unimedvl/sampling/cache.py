"""Step caches: skip model passes between denoising steps without retraining.

One cache object per request. At every model evaluation the sampler asks it once whether to
compute (``should_compute``): the answer covers *all* guidance branches of the request, so the
guided velocity is always the guidance formula applied to branches of the same step, computed
together or estimated together from the same computed steps (never one fresh branch against a
stale one). A request whose guidance is off has the single ``cond`` branch and caches it alone.

Methods (``GuidanceConfig.cache``):

- ``none``: every evaluation is computed.
- ``teacache`` (reuse, after TeaCache, Liu et al. 2024): the relative L1 change of the model's
  timestep-embedded input (the latent query as it enters the first layer) between consecutive
  evaluations is summed; while the sum stays under ``cache_threshold`` the last computed branch
  outputs are reused, and once it passes the threshold the step is computed and the sum restarts.
  TeaCache additionally rescales the change with a polynomial fitted per model; this cache uses the
  change as it is (a fitted polynomial would move the threshold scale, not the rule).
- ``taylorseer`` (forecast, after TaylorSeer, Liu et al. 2025): every ``cache_interval``-th
  evaluation is computed; between them each branch is extrapolated from the last computed ones
  with a Taylor (Newton divided-difference) polynomial in t of order ``cache_order``, which
  follows the velocity's drift instead of freezing it.

Both always compute the first ``cache_warmup`` evaluations and the last one (the step to t = 0
sets the fine detail), and compute whenever a needed branch has no history (guidance switching on).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from unimedvl.guidance import GuidanceConfig


class StepCache:
    """No caching: every evaluation is computed (``cache="none"``)."""

    needs_signal = False  # whether should_compute wants the model's embedded input

    def __init__(self, cfg: GuidanceConfig):
        self.cfg = cfg
        self.history: list[tuple[float, dict[str, Tensor]]] = []  # computed (t, {branch: velocity}), oldest first
        self.evaluations = 0  # evaluations seen so far

    def should_compute(self, t: float, branches: Sequence[str], last: bool, signal: Tensor | None = None) -> bool:
        """Decide for all ``branches`` of this request at time ``t`` (``last``: the final evaluation)."""
        self.evaluations += 1
        return True

    keep = 0  # computed evaluations kept for estimates

    def store(self, t: float, values: dict[str, Tensor]) -> None:
        """Keep the branch outputs of a computed evaluation (the last ``keep`` of them)."""
        if (
            self.keep
        ):  # a second evaluation at the same t (Heun's corrector, then the next predictor) replaces the first
            kept = [p for p in self.history if p[0] != t]
            self.history = (kept + [(t, values)])[-self.keep :]

    def estimate(self, t: float, branches: Sequence[str]) -> dict[str, Tensor]:
        # cache="none" computes every evaluation (should_compute is always True), so nothing asks this.
        raise RuntimeError("cache='none' has no estimate: every evaluation is computed")

    def _usable(self, branches: Sequence[str]) -> list[tuple[float, dict[str, Tensor]]]:
        """Computed evaluations that hold every branch asked for (so an estimate mixes no steps)."""
        return [(t, v) for t, v in self.history if all(b in v for b in branches)]

    def _forced(self, branches: Sequence[str], last: bool) -> bool:
        return self.evaluations <= self.cfg.cache_warmup or last or not self._usable(branches)


class TeaCache(StepCache):
    """Reuse the last computed outputs while the accumulated relative input change is under the threshold."""

    needs_signal = True
    keep = 1

    def __init__(self, cfg: GuidanceConfig):
        super().__init__(cfg)
        self.previous: Tensor | None = None  # the embedded input at the previous evaluation
        self.accumulated = 0.0

    def should_compute(self, t: float, branches: Sequence[str], last: bool, signal: Tensor | None = None) -> bool:
        self.evaluations += 1
        if signal is None:
            raise ValueError("teacache needs the model input of each evaluation")
        change = 0.0
        if self.previous is not None:
            change = float((signal - self.previous).abs().mean() / (self.previous.abs().mean() + 1e-12))
        self.previous = signal
        self.accumulated += change
        if self._forced(branches, last) or self.accumulated >= self.cfg.cache_threshold:
            self.accumulated = 0.0
            return True
        return False

    def estimate(self, t: float, branches: Sequence[str]) -> dict[str, Tensor]:
        _, values = self._usable(branches)[-1]
        return {b: values[b] for b in branches}


class TaylorSeer(StepCache):
    """Compute every ``cache_interval``-th evaluation; forecast the rest from the computed ones in t."""

    def __init__(self, cfg: GuidanceConfig):
        super().__init__(cfg)
        self.keep = cfg.cache_order + 1
        self.since = 0  # evaluations since the last computed one

    def should_compute(self, t: float, branches: Sequence[str], last: bool, signal: Tensor | None = None) -> bool:
        self.evaluations += 1
        self.since += 1
        if self._forced(branches, last) or self.since >= self.cfg.cache_interval:
            self.since = 0
            return True
        return False

    def estimate(self, t: float, branches: Sequence[str]) -> dict[str, Tensor]:
        points = self._usable(branches)[-self.keep :]
        return {b: newton_forecast([p[0] for p in points], [p[1][b] for p in points], t) for b in branches}


def newton_forecast(times: Sequence[float], values: Sequence[Tensor], t: float) -> Tensor:
    """The polynomial through (times[i], values[i]) evaluated at ``t`` (Newton's divided differences).

    One point gives the value itself (order 0), two a line, three a parabola; the times must differ.
    """
    coefficients = list(values)
    n = len(times)
    for level in range(1, n):
        for i in range(n - 1, level - 1, -1):
            coefficients[i] = (coefficients[i] - coefficients[i - 1]) / (times[i] - times[i - level])
    out = coefficients[-1]
    for i in range(n - 2, -1, -1):
        out = coefficients[i] + (t - times[i]) * out
    return out


CACHES = {"none": StepCache, "teacache": TeaCache, "taylorseer": TaylorSeer}


def new_cache(cfg: GuidanceConfig) -> StepCache:
    """A fresh cache of the configured method (one per request)."""
    return CACHES[cfg.cache](cfg)
