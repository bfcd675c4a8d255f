"""Guidance settings of image generation and the task presets: one home, no torch.

:class:`GuidanceConfig` names every knob of the Euler sampler with classifier-free guidance
(:func:`unimedvl.sampling.flow.euler_sample` does the maths) and of the fast sampling beside it (``solver``
and the step ``cache`` with its knobs; :mod:`unimedvl.sampling`; the defaults are the reference:
Euler, no cache); the presets are the spec's table
(unified-model.md section 5). The API, the CLI flags (:mod:`unimedvl.commands.options`), the app and
batch evaluation all start from these objects, so a default is written down once. Torch-free so
that ``unimedvl COMMAND --help`` can show the defaults without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unimedvl.errors import ConfigError, capped

RENORM_TYPES = ("global", "channel", "text_channel")
BRANCHES = ("cond", "text_uncond", "img_uncond")
# Speed options (unimedvl.sampling): ODE solvers with the fewest schedule points each needs, step caches.
SOLVERS = {"euler": 2, "heun": 3, "dpm++2m": 3}
CACHE_METHODS = ("none", "teacache", "taylorseer")


def check_strength(strength: float) -> None:
    """ConfigError unless 0 < strength <= 1 (the SDEdit start of an edit; ``unimedvl.sampling.flow.sampling_schedule``)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
        raise ConfigError(
            f"strength={strength!r} must be in (0, 1]: 1 samples from pure noise, smaller values "
            "start from the noised input image (e.g. 0.5)"
        )


@dataclass
class GuidanceConfig:
    """Image-generation settings (names shared by the API, CLI and evaluation).

    When a guidance branch applies (the release's rule, reproduced exactly): inside the interval
    ``cfg_interval[0] < t <= cfg_interval[1]`` (t on the shifted schedule), text guidance runs only
    when ``cfg_text_scale > 1`` and image guidance only when ``cfg_img_scale > 1`` *and* text guidance
    runs. A scale of 1 or below therefore means "off", not a push away from the condition, and with
    ``cfg_text_scale <= 1`` the image scale has no effect. A warning (once) says so when such a scale
    is given.
    """

    cfg_text_scale: float = 4.0  # text guidance: v_txt = v_unc_txt + s_txt (v - v_unc_txt)
    cfg_img_scale: float = 1.0  # image guidance: v' = v_unc_img + s_img (v_txt - v_unc_img)
    cfg_interval: tuple[float, float] = (0.4, 1.0)  # guidance applies when lo < t <= hi
    cfg_renorm_type: str = "global"  # global | channel | text_channel
    cfg_renorm_min: float = 0.0  # lower clamp of the renorm factor (upper is 1)
    timestep_shift: float = 3.0  # shift of the sampling schedule
    num_timesteps: int = 50  # points on the schedule (num_timesteps - 1 Euler steps)
    solver: str = "euler"  # euler (1 pass a step) | heun (2nd order, 2 passes) | dpm++2m (2nd order multistep, 1 pass)
    cache: str = "none"  # step cache: none | teacache (reuse while the input barely changed) | taylorseer (forecast)
    cache_threshold: float = 0.1  # teacache: recompute once the accumulated relative change of the input passes this
    cache_interval: int = 3  # taylorseer: compute every Nth step, forecast the steps between
    cache_order: int = 1  # taylorseer: order of the forecast (1 linear, 2 quadratic)
    cache_warmup: int = 2  # steps always computed at the start (the cache starts after them)

    # Edits: where sampling starts (SDEdit): 1 from pure noise (the reference), < 1 from the input image noised to
    # t = strength. Part of a preset, so a checkpoint carries the strength it was evaluated with; ignored (1) by
    # text-to-image, which has no input image.
    strength: float = 1.0

    def __post_init__(self) -> None:
        check_guidance_values(self)
        check_strength(self.strength)
        self.cfg_interval = (float(self.cfg_interval[0]), float(self.cfg_interval[1]))
        if self.cfg_renorm_type not in RENORM_TYPES:
            raise ConfigError(f"cfg_renorm_type={self.cfg_renorm_type!r}; choose one of {', '.join(RENORM_TYPES)}")
        if self.num_timesteps < 2:
            raise ConfigError(f"num_timesteps={self.num_timesteps} must be >= 2 (one Euler step needs two points)")
        if self.timestep_shift <= 0:
            raise ConfigError(f"timestep_shift={self.timestep_shift} must be > 0")
        check_speed_options(self)
        _warn_about_scales(self.cfg_text_scale, self.cfg_img_scale)

    def branches_at(self, t: float) -> tuple[str, ...]:
        """Which velocity branches step ``t`` needs (the release's thresholds: see the class docstring)."""
        lo, hi = self.cfg_interval
        if not (lo < t <= hi) or self.cfg_text_scale <= 1.0:
            return ("cond",)
        if self.cfg_img_scale > 1.0:
            return ("cond", "text_uncond", "img_uncond")
        return ("cond", "text_uncond")

    def to_json(self) -> dict[str, Any]:
        """The fields as plain JSON values (the interval as a list)."""
        out = dataclasses.asdict(self)
        out["cfg_interval"] = [float(x) for x in self.cfg_interval]
        return out


# Sane ranges of the numeric fields: a NaN, an infinity or 1e308 gives a black image, never an error.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "cfg_text_scale": (0.0, 100.0),
    "cfg_img_scale": (0.0, 100.0),
    "cfg_renorm_min": (0.0, 1.0),
    "timestep_shift": (1e-3, 1e3),
}
MAX_TIMESTEPS = 1000


def check_guidance_values(cfg: GuidanceConfig) -> None:
    """ConfigError naming the field unless every numeric field is a finite number in its range.

    The one check of values from everywhere a GuidanceConfig is built (API bodies, CLI flags,
    inference_config.json, the app, evaluation): each builds it, so each is checked here.
    """
    for name, (lo, hi) in VALUE_RANGES.items():
        value = getattr(cfg, name)
        if not _number(value) or not lo <= value <= hi:  # NaN fails every comparison
            raise ConfigError(f"{name}={capped(value, 40)} must be a finite number in [{lo:g}, {hi:g}]")
    n = cfg.num_timesteps
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_TIMESTEPS:
        raise ConfigError(
            f"num_timesteps={capped(n, 40)} must be an integer in [2, {MAX_TIMESTEPS}] (one Euler step "
            "needs two points)"
        )
    interval = cfg.cfg_interval
    if (
        not isinstance(interval, (tuple, list))
        or len(interval) != 2
        or not all(_number(x) for x in interval)
        or not 0.0 <= interval[0] <= interval[1] <= 1.0
    ):
        raise ConfigError(f"cfg_interval={capped(interval, 60)} must be two numbers lo <= hi in [0, 1]")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_speed_options(cfg: GuidanceConfig) -> None:
    """ConfigError naming the option and its allowed values for a bad solver or cache setting."""
    if cfg.solver not in SOLVERS:
        raise ConfigError(f"solver={cfg.solver!r}; choose one of {', '.join(SOLVERS)}")
    if cfg.num_timesteps < SOLVERS[cfg.solver]:
        raise ConfigError(
            f"num_timesteps={cfg.num_timesteps} is too few for solver={cfg.solver!r}: it needs at least "
            f"{SOLVERS[cfg.solver]} (or choose solver='euler')"
        )
    if cfg.cache not in CACHE_METHODS:
        raise ConfigError(f"cache={cfg.cache!r}; choose one of {', '.join(CACHE_METHODS)}")
    if isinstance(cfg.cache_threshold, bool) or not 0.0 < cfg.cache_threshold <= 1.0:
        raise ConfigError(f"cache_threshold={cfg.cache_threshold!r} must be in (0, 1] (e.g. 0.1; larger skips more)")
    for name, lo, hi in (("cache_interval", 1, 10), ("cache_order", 1, 2), ("cache_warmup", 1, 100)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name}={value!r} must be an integer from {lo} to {hi}")


_warned: set[str] = set()


def _warn_about_scales(text_scale: float, img_scale: float) -> None:
    """Say once per kind that a scale is "off" under the release's rule (it would surprise otherwise)."""
    notices = []
    if text_scale < 1.0 or img_scale < 1.0:
        notices.append(
            (
                "below",
                f"a guidance scale below 1 (cfg_text_scale={text_scale:g}, cfg_img_scale="
                f"{img_scale:g}) turns that guidance off, as in the release: it acts like 1",
            )
        )
    if text_scale <= 1.0 < img_scale:
        notices.append(
            (
                "img_without_text",
                f"cfg_img_scale={img_scale:g} has no effect while cfg_text_scale="
                f"{text_scale:g} <= 1: image guidance runs only with text guidance, "
                "as in the release",
            )
        )
    for kind, message in notices:
        if kind not in _warned:
            _warned.add(kind)
            warnings.warn(message, UserWarning, stacklevel=4)


# The spec's table (unified-model.md section 5).
TEXT_TO_IMAGE = GuidanceConfig(
    cfg_text_scale=4.0,
    cfg_img_scale=1.0,
    cfg_interval=(0.4, 1.0),
    cfg_renorm_type="global",
    cfg_renorm_min=0.0,
    timestep_shift=3.0,
    num_timesteps=50,
)
EDITING = GuidanceConfig(
    cfg_text_scale=4.0,
    cfg_img_scale=2.0,
    cfg_interval=(0.0, 1.0),
    cfg_renorm_type="text_channel",
    cfg_renorm_min=0.0,
    timestep_shift=3.0,
    num_timesteps=50,
)
# The medical batch test (spec medical.md section 5): the editing settings at shift 1.0.
RESTORATION = dataclasses.replace(EDITING, timestep_shift=1.0)

GUIDANCE_PRESETS: dict[str, GuidanceConfig] = {
    "text_to_image": TEXT_TO_IMAGE,
    "editing": EDITING,
    "restoration": RESTORATION,
}
# A checkpoint's inference_config.json may carry a fast variant of each preset ("editing_fast", ...):
# the same guidance with a solver / step cache, measured against the reference (bench/generation_speed.py).
FAST_SUFFIX = "_fast"
PRESET_NAMES = tuple(GUIDANCE_PRESETS) + tuple(name + FAST_SUFFIX for name in GUIDANCE_PRESETS)


def reference_preset(name: str) -> GuidanceConfig:
    """The reference settings a preset name starts from (a fast variant: its reference preset)."""
    return GUIDANCE_PRESETS[name.removesuffix(FAST_SUFFIX)]


# Inference task -> the preset it samples with (the only copy of this table; ``eval`` is the medical batch test).
TASK_PRESETS: dict[str, str] = {"edit": "editing", "generate": "text_to_image", "eval": "restoration"}
# The tasks a user runs one request at a time (the CLI's edit/generate, the app, the HTTP API) -> the release's preset.
TASK_GUIDANCE: dict[str, GuidanceConfig] = {task: GUIDANCE_PRESETS[TASK_PRESETS[task]] for task in ("edit", "generate")}
GUIDANCE_FIELDS = tuple(f.name for f in dataclasses.fields(GuidanceConfig))  # every setting a front end may override


def preset_name(task_or_preset: str) -> str:
    """The preset a task (edit, generate, eval), a task's fast variant (``edit_fast``) or a preset name
    (``editing``, ``editing_fast``) stands for; ConfigError for anything else."""
    stem = task_or_preset.removesuffix(FAST_SUFFIX)
    name = TASK_PRESETS.get(stem, stem) + (FAST_SUFFIX if task_or_preset.endswith(FAST_SUFFIX) else "")
    if name not in PRESET_NAMES:
        raise ConfigError(
            f"no guidance preset {task_or_preset!r}; presets: {', '.join(PRESET_NAMES)} (or a task: "
            f"{', '.join(TASK_PRESETS)}, each also as TASK_fast)"
        )
    return name


def task_preset_names(task: str, presets: Mapping[str, GuidanceConfig] | None = None) -> list[str]:
    """The presets a user may pick for ``task``: its own, then its fast variant when ``presets`` (a checkpoint's
    guidance table; None: the release's, which has none) carries one."""
    name = preset_name(task)
    return [name] + ([name + FAST_SUFFIX] if name + FAST_SUFFIX in (presets or {}) else [])


def resolve_guidance(
    task: str,
    presets: Mapping[str, GuidanceConfig] | None = None,
    overrides: Mapping[str, Any] | None = None,
    preset: str | None = None,
    source: str = "the release presets",
) -> GuidanceConfig:
    """The guidance a request samples with: the checkpoint's preset for ``task`` (or the named ``preset``),
    with the user's ``overrides`` over it. The one merge every front end uses (CLI flags, the Python API, the
    HTTP API, the app, evaluation), so the same checkpoint and the same settings sample the same way everywhere.

    ``presets``: the checkpoint's guidance table (``InferenceConfig.guidance``; None: the release's); a preset
    missing from it takes the release's. ``preset``: a preset name or task (``editing_fast``, ``edit_fast``, ...)
    that replaces the task's; a fast one must be in ``presets``. ``overrides``: GuidanceConfig field -> value,
    None meaning "not given" (a list interval becomes a tuple). ``source`` names the table in errors.
    """
    name = preset_name(preset or task)
    presets = GUIDANCE_PRESETS if presets is None else presets
    if name.endswith(FAST_SUFFIX) and name not in presets:
        raise ConfigError(
            f"{source}: no fast preset {name!r} (add it to the guidance of inference_config.json: a "
            "solver and cache measured with bench/generation_speed.py)"
        )
    base = presets.get(name) or GUIDANCE_PRESETS[name]
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(GUIDANCE_FIELDS))
    if unknown:
        raise ConfigError(f"unknown guidance setting(s) {unknown}; known: {', '.join(GUIDANCE_FIELDS)}")
    if isinstance(given.get("cfg_interval"), list):
        given["cfg_interval"] = tuple(given["cfg_interval"])
    return dataclasses.replace(base, **given) if given else base
