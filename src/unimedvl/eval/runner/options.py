"""What one ``unimedvl eval`` run is asked to do (:class:`EvalOptions`): the flags of the command, as a value.

:mod:`unimedvl.commands.eval` builds it from the command line; the demo builds it directly. The
defaults are the flags' defaults (the command takes them from here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unimedvl.benchmarks.protocols import DEFAULT_PROTOCOL
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS

SIZE_FIELDS = ("vae_min_size", "vae_max_size", "vit_min_size", "vit_max_size", "max_pixels")


@dataclass
class EvalOptions:
    """The checkpoints, the test sets and the settings of an evaluation run (see :mod:`unimedvl.commands.eval`)."""

    models: list[Path]  # checkpoint directories, evaluated one after another
    out: str | os.PathLike[str]  # results go to OUT/<model_id>/<split>/
    data: str | os.PathLike[str] | None = None  # the test JSONL (with benchmarks: a single benchmark's folder)
    data_dir: str | os.PathLike[str] | None = None  # folder image paths are relative to (default: the JSONL's)
    split: str | None = None  # split label (default: the data file's stem; a benchmark's own label)
    benchmarks: list[tuple[str, Path]] = field(default_factory=list)  # (name, folder) of standard benchmarks
    language: str = "en"  # SLAKE question language
    protocol: str = DEFAULT_PROTOCOL  # scoring rules of a benchmark's pooled accuracy
    benchmark_cache: str | os.PathLike[str] | None = None  # where benchmarks are converted (default OUT/_benchmarks)
    limit: int | None = None  # only the first N records
    limit_per_task: list[str] | None = None  # "N" / "TASK=N" caps per main_task_type (as given, for provenance)
    metric_mode: str = "reference"  # reference | native | both
    overwrite: bool = False  # replace results of another run in the run folder
    retry_failed: bool = False  # redo samples that failed in an earlier run
    confine_data_dir: bool = False  # fail samples whose images lie outside data_dir
    batch_size: int | str = "auto"  # samples served together, or auto (by the memory estimate)
    progress: bool = True  # a progress bar on rank 0
    device: str | None = None  # default: cuda if available, else cpu (cuda:LOCAL_RANK under torchrun)
    dtype: str | None = None  # default: bf16 on cuda, fp32 elsewhere
    weights: str = "ema"  # ema | model
    sizes: dict[str, int | None] = field(default_factory=dict)  # image size overrides (SIZE_FIELDS)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # images over this many pixels fail their sample
    components: str = "all"  # memory plan (unimedvl.checkpoint.memory_plan)
    quantize: str | None = None
    offload: str | None = None
    device_map: str | None = None
    max_memory: str | None = None
    max_new_tokens: int = 800  # understanding pass / answer length limit
    seed: int = 0  # run seed
    strength: float | None = None  # SDEdit start of edits (None: the checkpoint's preset)
    guidance: dict[str, Any] = field(default_factory=dict)  # guidance fields overriding the checkpoint's preset

    def memory(self) -> dict[str, Any]:
        """The memory-plan choices as keyword arguments of :func:`~unimedvl.checkpoint.memory_estimate.resolve_load`."""
        return dict(
            components=self.components or "all",
            quantize=self.quantize,
            offload=self.offload,
            device_map=self.device_map,
            max_memory=self.max_memory,
        )
