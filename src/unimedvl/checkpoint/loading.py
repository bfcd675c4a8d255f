"""How a checkpoint is loaded on a device: its dtype and its memory plan, decided in one place.

``UniMedVL.from_pretrained`` (:mod:`unimedvl.inference.api`) and ``unimedvl eval``
(:mod:`unimedvl.eval.runner.job`) both resolve them with :func:`resolve_load`.
"""

from __future__ import annotations

from typing import Any

from unimedvl.checkpoint.memory_estimate import resolve_plan
from unimedvl.checkpoint.memory_plan import LoadPlan, default_dtype
from unimedvl.checkpoint.release import read_model_config


def resolve_load(
    path,
    inference,
    device,
    dtype=None,
    *,
    components: str = "all",
    quantize: str | None = None,
    offload: str | None = None,
    device_map: str | None = None,
    max_memory=None,
) -> tuple[Any, LoadPlan, str | None]:
    """How the checkpoint at ``path`` is loaded on ``device``: (dtype, LoadPlan, notice).

    The dtype is ``dtype``, else :func:`~unimedvl.checkpoint.memory_plan.default_dtype` (bf16 on CUDA,
    fp32 elsewhere); the plan is :func:`~unimedvl.checkpoint.memory_estimate.resolve_plan`'s for the
    checkpoint's model config and ``inference`` (its image sizes): with ``max_memory`` the cheapest that
    fits, and a one-line notice saying which (the config is read only then).
    """
    dtype = dtype or default_dtype(device)
    cfg = read_model_config(path) if max_memory is not None else None  # only a budget search needs the sizes
    plan, notice = resolve_plan(
        cfg,
        inference,
        device,
        dtype,
        components=components,
        quantize=quantize,
        offload=offload,
        device_map=device_map,
        max_memory=max_memory,
    )
    return dtype, plan, notice
