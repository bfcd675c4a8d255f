"""The YAML mix (tier 3): which datasets train, in which proportions, with which image transforms.

The reference format is accepted as-is; one entry per dataset type (a registry name)::

    CounterfactualMedicalIterableDataset_ver1:
      dataset_names: {counterfactual_train: [cxr_a_train, cxr_b_train]}   # grouped, or a flat list
      image_transform_args:     {image_stride: 16, max_image_size: 1024, min_image_size: 512}
      vit_image_transform_args: {image_stride: 14, max_image_size: 980, min_image_size: 378, max_pixels: 2007040}
      weight: {counterfactual_train: 10}
      num_used_data: {counterfactual_train: [0, 0]}
      is_mandatory: true
      shuffle_lines: true
      shuffle_seed: 42

Groups: a grouped ``dataset_names`` maps group -> dataset names (the group's records are the
concatenation of its datasets); in a flat list every dataset is its own group named after it.
The group is the unit of sampling, sharding and resumption.

- ``weight``: relative sampling weight per group: a mapping keyed by group, a list in group
  order, or one number for all (default 1). Negative weights, or all weights zero, are refused.
- ``num_used_data``: records used per group: a mapping keyed by group, or a list in group order
  (BAGEL's form). A value is ``[start, end]`` (0-based, end exclusive; end 0 = to the end of the
  file), ``[start]`` (to the end) or a count ``N`` (the first N; 0 = all), applied to every dataset
  of the group, or a list of such values, one per dataset. Default: all.
- ``is_mandatory`` (default false): one sample of this type's groups opens every pack.
- ``shuffle_lines`` (default false) and ``shuffle_seed`` (default 0): reshuffle every epoch.
- ``frame_sampler_args`` (video, reference only) is accepted and ignored.
- A top-level ``dataset_info: PATH`` (relative to the mix) names the dataset info file.

:func:`load_mix` checks the whole mix before anything trains: every type, name, key, weight and
range, that every JSONL file exists (and is indexed), and, given the model config, that each type
is trainable by the model and its transforms fit the model's strides and position tables. Every
problem is one line; all are reported together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unimedvl.config import ModelConfig, load_yaml, unknown_keys_message
from unimedvl.data.datasets import DATASET_REGISTRY, DatasetInfo, JsonlIndex, find_dataset, load_dataset_info
from unimedvl.data.plans import ModelPaths, SequencePlan
from unimedvl.data.records import Record
from unimedvl.errors import ConfigError, quoted
from unimedvl.imaging.transforms import ImageTransform

ENTRY_KEYS = (
    "dataset_names",
    "image_transform_args",
    "vit_image_transform_args",
    "weight",
    "num_used_data",
    "is_mandatory",
    "shuffle_lines",
    "shuffle_seed",
)
IGNORED_KEYS = ("frame_sampler_args",)
INFO_KEY = "dataset_info"


@dataclass
class MixDataset:
    """One dataset of a group and the slice of its records in use."""

    info: DatasetInfo
    index: JsonlIndex
    start: int  # first record used (0-based among non-blank lines)
    end: int  # one past the last record used

    @property
    def count(self) -> int:
        return self.end - self.start


@dataclass
class MixGroup:
    """A sampling unit: the concatenated records of some datasets of one type, with its settings."""

    dataset_type: str  # the mix key, reported in PackedBatch.sample_kinds
    group: str  # group name (the dataset name in a flat list)
    plan: SequencePlan
    datasets: list[MixDataset]
    weight: float = 1.0  # relative sampling weight
    is_mandatory: bool = False  # one sample opens every pack
    shuffle_lines: bool = False  # reshuffle every epoch
    shuffle_seed: int = 0  # seed of the shuffles
    vae_transform: ImageTransform | None = None  # image_transform_args
    vit_transform: ImageTransform | None = None  # vit_image_transform_args
    _starts: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._starts = np.cumsum([0] + [d.count for d in self.datasets])

    @property
    def key(self) -> str:
        """Unique name of the group in the mix (used in the data state)."""
        return f"{self.dataset_type}/{self.group}"

    @property
    def num_records(self) -> int:
        return int(self._starts[-1])

    def _locate(self, k: int) -> tuple[MixDataset, int]:
        d = int(np.searchsorted(self._starts, k, side="right")) - 1
        dataset = self.datasets[d]
        return dataset, dataset.start + k - int(self._starts[d])

    def read(self, k: int) -> Record:
        """Record ``k`` of the group (0..num_records-1)."""
        dataset, i = self._locate(k)
        return dataset.index.read(i)

    def where(self, k: int) -> str:
        """``path:line`` of record ``k``."""
        dataset, i = self._locate(k)
        return dataset.index.where(i)

    def data_dir(self, k: int) -> str:
        """The folder record ``k``'s image paths are relative to (its dataset's data_dir)."""
        dataset, _ = self._locate(k)
        return dataset.index.data_dir


@dataclass
class Mix:
    """A resolved mix: its groups in file order."""

    path: str  # the mix file
    info_path: str  # the dataset info file used
    groups: list[MixGroup]

    def sizes(self) -> dict[str, int]:
        """Group key -> records in use (what a data state is checked against)."""
        return {g.key: g.num_records for g in self.groups}

    def sources(self) -> list[tuple[str, str]]:
        """Distinct (jsonl_path, data_dir) pairs, for validation."""
        seen: dict[tuple[str, str], None] = {}
        for g in self.groups:
            for d in g.datasets:
                seen[(d.info.jsonl_path, d.info.data_dir)] = None
        return list(seen)


def find_dataset_info(mix_path: str | os.PathLike[str], mix: Mapping[str, Any], explicit: str | None) -> str:
    """The dataset info file: ``explicit``, else the mix's ``dataset_info:`` key, else dataset_info.yaml beside it."""
    if explicit is not None:
        return os.fspath(explicit)
    folder = Path(mix_path).resolve().parent
    if INFO_KEY in mix:
        value = mix[INFO_KEY]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{mix_path}: {INFO_KEY} must be a path string, got {quoted(value)}")
        return str(folder / os.path.expanduser(value))
    for name in ("dataset_info.yaml", "dataset_info.yml", "dataset_info.json"):
        if (folder / name).is_file():
            return str(folder / name)
    raise ConfigError(
        f"{mix_path}: no dataset info file; pass one (DataConfig.dataset_info_file / --dataset-info), "
        f"add '{INFO_KEY}: PATH' to the mix, or put dataset_info.yaml beside the mix"
    )


def load_mix(
    mix_path: str | os.PathLike[str],
    info_path: str | os.PathLike[str] | None = None,
    model_cfg: ModelConfig | None = None,
) -> Mix:
    """Resolve and check a YAML mix; ConfigError listing every problem (one line each)."""
    mix, problems = check_mix(mix_path, info_path, model_cfg)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the data mix:\n" + "\n".join(f"  {p}" for p in problems))
    assert mix is not None
    return mix


def check_mix(
    mix_path: str | os.PathLike[str],
    info_path: str | os.PathLike[str] | None = None,
    model_cfg: ModelConfig | None = None,
) -> tuple[Mix | None, list[str]]:
    """(resolved mix or None, problems): the non-raising form used by ``validate-data``."""
    mix_path = os.fspath(mix_path)
    try:
        data = load_yaml(mix_path)
        info_file = find_dataset_info(mix_path, data, None if info_path is None else os.fspath(info_path))
        info = load_dataset_info(info_file)
    except ConfigError as err:
        return None, str(err).splitlines()
    problems: list[str] = []
    groups: list[MixGroup] = []
    indexes: dict[str, JsonlIndex] = {}
    for dataset_type, entry in data.items():
        if dataset_type == INFO_KEY:
            continue
        groups.extend(_entry(mix_path, str(dataset_type), entry, info, indexes, model_cfg, problems))
    if not groups and not problems:
        problems.append(f"{mix_path}: the mix names no dataset types; known types: {', '.join(DATASET_REGISTRY)}")
    if groups and not any(g.weight > 0 for g in groups):
        problems.append(f"{mix_path}: every weight is zero; give at least one group a positive weight")
    if problems:
        return None, problems
    return Mix(mix_path, info_file, groups), []


def _entry(
    mix_path: str,
    dataset_type: str,
    entry: Any,
    info: Mapping[str, Mapping[str, DatasetInfo]],
    indexes: dict[str, JsonlIndex],
    model_cfg: ModelConfig | None,
    problems: list[str],
) -> list[MixGroup]:
    where = f"{mix_path}: {dataset_type}"
    start = len(problems)
    plan = DATASET_REGISTRY.get(dataset_type)
    if plan is None:
        problems.append(f"{where}: unknown dataset type; known types: {', '.join(DATASET_REGISTRY)}")
        return []
    if not isinstance(entry, Mapping):
        problems.append(f"{where}: expected a mapping with dataset_names, weight, ... got {type(entry).__name__}")
        return []
    unknown = sorted(set(entry) - set(ENTRY_KEYS) - set(IGNORED_KEYS))
    if unknown:
        problems.append(f"{where}: {unknown_keys_message(unknown, ENTRY_KEYS)}")
    named = _group_names(entry.get("dataset_names"), f"{where}.dataset_names", problems)
    flags = {}
    for key, default, kind in (("is_mandatory", False, bool), ("shuffle_lines", False, bool), ("shuffle_seed", 0, int)):
        value = entry.get(key, default)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            expected = "true or false" if kind is bool else "an integer"
            problems.append(f"{where}.{key}: must be {expected}, got {quoted(value)}")
            value = default
        flags[key] = value
    transforms = {}
    for key in ("image_transform_args", "vit_image_transform_args"):
        transforms[key] = None
        if entry.get(key) is not None:
            try:
                transforms[key] = ImageTransform.from_config(entry[key], source=f"{where}.{key}")
            except ConfigError as err:
                problems.append(str(err))
    if model_cfg is not None:
        _check_model(where, plan, transforms, model_cfg, problems)
    if named is None:
        return []
    group_names = list(named)
    weights = _per_group(entry.get("weight", 1), group_names, f"{where}.weight", problems, list_aligned=True)
    used = _per_group(
        entry.get("num_used_data", 0), group_names, f"{where}.num_used_data", problems, list_aligned=False
    )
    groups = []
    for group, names in named.items():
        datasets = []
        weight = weights.get(group, 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            problems.append(f"{where}.weight.{group}: must be a number >= 0, got {quoted(weight)}")
            weight = 0
        specs = _dataset_ranges(used.get(group, 0), len(names), f"{where}.num_used_data.{group}", problems)
        for name, spec in zip(names, specs or [None] * len(names)):
            found = find_dataset(info, name, dataset_type)
            if isinstance(found, str):
                problems.append(f"{where}.dataset_names: {found}")
                continue
            dataset = _open_dataset(found, spec, f"{where}: dataset {quoted(name)}", indexes, problems)
            if dataset is not None:
                datasets.append(dataset)
        if len(datasets) == len(names) and specs is not None:
            groups.append(
                MixGroup(
                    dataset_type,
                    group,
                    plan,
                    datasets,
                    float(weight),
                    flags["is_mandatory"],
                    flags["shuffle_lines"],
                    flags["shuffle_seed"],
                    transforms["image_transform_args"],
                    transforms["vit_image_transform_args"],
                )
            )
    return groups if len(problems) == start else []


def _group_names(value: Any, where: str, problems: list[str]) -> dict[str, list[str]] | None:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(set(value)) != len(value):
            problems.append(f"{where}: a dataset is listed twice")
            return None
        return {v: [v] for v in value}
    if isinstance(value, Mapping) and value:
        out = {}
        for group, names in value.items():
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                problems.append(
                    f"{where}.{group}: expected a dataset name or a non-empty list of names, got {quoted(names)}"
                )
                return None
            out[str(group)] = names
        return out
    problems.append(
        f"{where}: expected a non-empty list of dataset names or a mapping group -> names, got {quoted(value)}"
    )
    return None


def _per_group(value: Any, groups: list[str], where: str, problems: list[str], list_aligned: bool) -> dict[str, Any]:
    """A per-group setting given as a mapping keyed by group, a list in group order, or one value for all.

    ``list_aligned``: a list is one value per group (weight); otherwise (num_used_data) a list is
    per group only in BAGEL's form (one entry per group, several groups), and a single range else.
    """
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in groups]
        if unknown:
            problems.append(f"{where}: {', '.join(unknown)} is not a group of this entry; groups: {', '.join(groups)}")
        missing = [g for g in groups if g not in value]
        if missing:
            problems.append(f"{where}: no value for {', '.join(missing)}; give one for every group")
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list) and not list_aligned:
        if len(groups) > 1 and len(value) == len(groups):
            if len(value) == 2 and all(isinstance(v, int) for v in value) and any(value):
                problems.append(
                    f"{where}: {quoted(value)}"
                    f" is ambiguous with two groups (a [start, end] range or one count "
                    f"per group?); write it as a mapping {{{groups[0]}: ..., {groups[1]}: ...}}"
                )
                return {}
            return dict(zip(groups, value))
        return {g: value for g in groups}
    if isinstance(value, list):
        if len(value) != len(groups):
            problems.append(
                f"{where}: {len(value)} value(s) for {len(groups)} group(s); give one per group ({', '.join(groups)})"
            )
            return {}
        return dict(zip(groups, value))
    return {g: value for g in groups}


def _dataset_ranges(value: Any, n: int, where: str, problems: list[str]) -> list[tuple[int, int]] | None:
    """num_used_data of one group as one (start, end) spec per dataset (end 0 = to the end)."""
    specs = value if isinstance(value, list) and any(isinstance(v, list) for v in value) else [value] * n
    if len(specs) != n:
        problems.append(f"{where}: {len(specs)} range(s) for {n} dataset(s); give one per dataset or one for all")
        return None
    out = []
    for spec in specs:
        ok = True
        if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0:
            start, end = 0, spec
        elif (
            isinstance(spec, list)
            and 1 <= len(spec) <= 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in spec)
        ):
            start, end = spec[0], spec[1] if len(spec) == 2 else 0
        else:
            ok = False
        if not ok:
            problems.append(
                f"{where}: expected [start, end], [start] or a count (non-negative integers), got {quoted(spec)}"
            )
            return None
        if end and start >= end:
            problems.append(f"{where}: [{start}, {end}] is empty; end must be above start (or 0 for the end of file)")
            return None
        out.append((start, end))
    return out


def _open_dataset(
    info: DatasetInfo, spec: tuple[int, int] | None, where: str, indexes: dict[str, JsonlIndex], problems: list[str]
) -> MixDataset | None:
    path = info.jsonl_path
    if not os.path.isfile(path):
        problems.append(f"{where}: JSONL file {path} not found (check jsonl_path in the dataset info)")
        return None
    if not os.path.isdir(info.data_dir):
        problems.append(f"{where}: data_dir {info.data_dir} not found (check data_dir in the dataset info)")
        return None
    key = f"{path}\0{info.data_dir}"
    if key not in indexes:
        try:
            indexes[key] = JsonlIndex(path, info.data_dir)
        except OSError as err:
            problems.append(f"{where}: cannot read {path} ({err.strerror})")
            return None
    index = indexes[key]
    n = len(index)
    if info.num_total_samples is not None and info.num_total_samples != n:
        problems.append(
            f"{where}: the dataset info says num_total_samples={info.num_total_samples} but {path} has "
            f"{n} records; fix or remove num_total_samples"
        )
        return None
    if n == 0:
        problems.append(f"{where}: {path} has no records")
        return None
    start, end = spec if spec is not None else (0, 0)
    end = end or n
    if start >= n or end > n:
        problems.append(
            f"{where}: num_used_data [{start}, {end}] is outside the file ({n} records in {path}); "
            f"use a range within [0, {n}] or [0, 0] for all"
        )
        return None
    return MixDataset(info, index, start, end)


def _check_model(
    where: str, plan: SequencePlan, transforms: dict[str, ImageTransform | None], cfg: ModelConfig, problems: list[str]
) -> None:
    paths = ModelPaths.of(cfg)
    reason = plan.unsupported(paths)
    if reason:
        problems.append(f"{where}: {reason}; remove it from the mix or enable that path in the model config")
        return
    needed = (
        (
            "image_transform_args",
            plan.uses_vae(paths),
            cfg.vae_image_stride,
            cfg.max_latent_size,
            "max_latent_size",
            "VAE",
        ),
        (
            "vit_image_transform_args",
            plan.uses_vit(paths),
            cfg.vit.patch_size,
            cfg.vit_max_num_patch_per_side,
            "vit_max_num_patch_per_side",
            "ViT",
        ),
    )
    for key, used, stride, side, table, label in needed:
        transform = transforms[key]
        if not used:
            continue
        if transform is None:
            problems.append(f"{where}: {key} is missing; this type sends images through the {label}")
            continue
        if transform.image_stride % stride:
            problems.append(
                f"{where}.{key}.image_stride={transform.image_stride} is not a multiple of the model's "
                f"{label} stride {stride}; use {stride} (or a multiple)"
            )
            continue
        largest = (transform.max_image_size // transform.image_stride) * transform.image_stride // stride
        if not cfg.interpolate_pos and largest > side:
            problems.append(
                f"{where}.{key}.max_image_size={transform.max_image_size} gives up to {largest} patches "
                f"per side, beyond the model's {table}={side}; lower it to <= {side * stride}"
            )
