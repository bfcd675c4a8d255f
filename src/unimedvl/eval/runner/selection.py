"""Which samples an evaluation runs: ``--limit`` and ``--limit-per-task`` caps, in file order."""

from __future__ import annotations

from unimedvl.errors import ConfigError


def parse_task_limits(items: list[str] | None) -> dict[str | None, int]:
    """``["10", "image_understanding=200"]`` -> ``{None: 10, "image_understanding": 200}`` (None: other tasks)."""
    limits: dict[str | None, int] = {}
    for item in items or []:
        task, sep, value = item.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            n = -1
        if n < 0 or (sep and not task):
            raise ConfigError(f"--limit-per-task {item!r}: expected N or TASK=N with N >= 0")
        limits[task if sep else None] = n
    return limits


def select_samples(samples: list, limit: int | None, per_task: dict[str | None, int]) -> list:
    """The samples to evaluate: at most ``per_task[task]`` (or ``per_task[None]``) of each task in file
    order, then the first ``limit`` of those."""
    counts: dict[str, int] = {}
    selected = []
    for sample in samples:
        cap = per_task.get(sample.task_type, per_task.get(None))
        seen = counts.get(sample.task_type, 0)
        if cap is None or seen < cap:
            selected.append(sample)
        counts[sample.task_type] = seen + 1
    return selected if limit is None else selected[:limit]
