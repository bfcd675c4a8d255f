"""Dataset types (tier 1), dataset info (tier 2) and indexed, sharded access to JSONL records.

Tier 1, the registry: a dataset type name (the key of a YAML mix entry) -> a
:class:`~unimedvl.data.plans.SequencePlan`. Built-in names are the reference's, plus aliases::

    vlm_sft, vlm_sft_recon, text_only, t2i (alias t2i_pretrain), unified_edit,
    MedicalImageEditingIterableDataset, CounterfactualMedicalIterableDataset_ver1
    (alias CounterfactualMedicalIterableDataset)

Add a type with :func:`register_dataset_type` (a plan instance, or a SequencePlan subclass).

Tier 2, dataset info: a YAML or JSON file ``group -> dataset name -> {jsonl_path, data_dir?,
num_total_samples?}``; the group is normally the dataset type. Relative paths are resolved against
the info file's folder; ``data_dir`` defaults to the JSONL file's folder. Users edit this file,
never Python.

Sharding: :func:`shard_order` gives the records one data shard (one rank x loader worker) reads in
one epoch: the epoch's order (a seeded permutation when shuffling) taken every ``num_shards``-th
item from ``shard``. Shards are disjoint and together cover every record; when the count does not
divide, the first shards get one record more (nothing is dropped).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unimedvl.config import load_yaml, unknown_keys_message
from unimedvl.data.plans import (
    COUNTERFACTUAL,
    MEDICAL_EDITING,
    T2I,
    TEXT_ONLY,
    UNIFIED_EDIT,
    VLM_SFT,
    VLM_SFT_RECON,
    SequencePlan,
)
from unimedvl.data.records import Record, parse_line
from unimedvl.errors import ConfigError, quoted

# ---------------------------------------------------------------------------------------------
# Tier 1: the registry.

DATASET_REGISTRY: dict[str, SequencePlan] = {}


def register_dataset_type(name: str, plan_or_class: SequencePlan | type, replace: bool = False) -> SequencePlan:
    """Register ``name`` (a YAML mix key) for a plan instance or a SequencePlan subclass; returns the plan.

    Re-registering a name raises ConfigError unless ``replace`` is true.
    """
    if isinstance(plan_or_class, type):
        if not issubclass(plan_or_class, SequencePlan):
            raise ConfigError(f"register_dataset_type({quoted(name)}): {plan_or_class.__name__} is not a SequencePlan")
        try:
            plan = plan_or_class()  # type: ignore[call-arg]
        except TypeError:
            plan = plan_or_class(name)  # type: ignore[call-arg]
    elif isinstance(plan_or_class, SequencePlan):
        plan = plan_or_class
    else:
        raise ConfigError(
            f"register_dataset_type({quoted(name)}): expected a SequencePlan or subclass, "
            f"got {type(plan_or_class).__name__}"
        )
    if name in DATASET_REGISTRY and not replace:
        raise ConfigError(f"dataset type {quoted(name)} is already registered; pass replace=True to override it")
    DATASET_REGISTRY[name] = plan
    return plan


for _plan in (VLM_SFT, VLM_SFT_RECON, TEXT_ONLY, T2I, UNIFIED_EDIT, MEDICAL_EDITING, COUNTERFACTUAL):
    register_dataset_type(_plan.name, _plan)
register_dataset_type("t2i_pretrain", T2I)  # the BAGEL name
register_dataset_type("CounterfactualMedicalIterableDataset", COUNTERFACTUAL)  # spec table name


def get_dataset_type(name: str) -> SequencePlan:
    """The plan registered under ``name``; ConfigError listing the known names otherwise."""
    try:
        return DATASET_REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown dataset type {quoted(name)}; known types: {', '.join(DATASET_REGISTRY)}") from None


# ---------------------------------------------------------------------------------------------
# Tier 2: dataset info.

_INFO_KEYS = {"jsonl_path", "data_dir", "num_total_samples"}


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset named in the dataset info file."""

    name: str  # the dataset name the mix refers to
    group: str  # the info file's top-level key it sits under (normally the dataset type)
    jsonl_path: str  # absolute path of the JSONL file
    data_dir: str  # absolute folder image paths are relative to
    num_total_samples: int | None = None  # declared record count (checked against the file)


def load_dataset_info(path: str | os.PathLike[str]) -> dict[str, dict[str, DatasetInfo]]:
    """Read a dataset info file (YAML or JSON) into ``group -> name -> DatasetInfo``.

    Raises ConfigError listing every malformed entry (one line each). Files are not opened here.
    """
    path = Path(path)
    data = load_yaml(path)
    base = path.resolve().parent
    problems: list[str] = []
    out: dict[str, dict[str, DatasetInfo]] = {}
    for group, datasets in data.items():
        if not isinstance(datasets, Mapping):
            problems.append(f"{path}: {group}: expected a mapping of dataset name -> {{jsonl_path, data_dir}}")
            continue
        for name, entry in datasets.items():
            where = f"{path}: {group}.{name}"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: expected a mapping with jsonl_path (and data_dir, num_total_samples)")
                continue
            unknown = sorted(set(entry) - _INFO_KEYS)
            if unknown:
                problems.append(f"{where}: {unknown_keys_message(unknown, _INFO_KEYS)}")
            jsonl = entry.get("jsonl_path")
            if not isinstance(jsonl, str) or not jsonl:
                problems.append(f"{where}: jsonl_path must be a path string")
                continue
            jsonl_abs = (base / os.path.expanduser(jsonl)).resolve()
            data_dir = entry.get("data_dir")
            if data_dir is not None and (not isinstance(data_dir, str) or not data_dir):
                problems.append(f"{where}: data_dir must be a path string")
                continue
            data_abs = (base / os.path.expanduser(data_dir)).resolve() if data_dir else jsonl_abs.parent
            total = entry.get("num_total_samples")
            if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 0):
                problems.append(f"{where}: num_total_samples must be a non-negative integer, got {quoted(total)}")
                total = None
            out.setdefault(str(group), {})[str(name)] = DatasetInfo(
                str(name), str(group), str(jsonl_abs), str(data_abs), total
            )
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def find_dataset(info: Mapping[str, Mapping[str, DatasetInfo]], name: str, dataset_type: str) -> DatasetInfo | str:
    """The info entry for ``name`` under ``dataset_type`` (else any group); a problem string when absent."""
    if name in info.get(dataset_type, {}):
        return info[dataset_type][name]
    hits = [group for group, datasets in info.items() if name in datasets]
    if len(hits) == 1:
        return info[hits[0]][name]
    if len(hits) > 1:
        return (
            f"dataset {quoted(name)} is in several info groups ({', '.join(hits)}); put it under {quoted(dataset_type)}"
        )
    known = sorted(info.get(dataset_type, {})) or sorted(n for datasets in info.values() for n in datasets)
    return f"unknown dataset {quoted(name)}; known datasets: {', '.join(known) or '(none)'}"


# ---------------------------------------------------------------------------------------------
# Indexed JSONL access.


class JsonlIndex:
    """Byte offsets of a JSONL file's non-blank lines, so record ``i`` is read with one seek."""

    def __init__(self, path: str, data_dir: str):
        self.path = path
        self.data_dir = data_dir
        offsets, lines = [], []
        with open(path, "rb") as handle:
            offset = 0
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    offsets.append(offset)
                    lines.append(number)
                offset += len(raw)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lines = np.asarray(lines, dtype=np.int64)
        self._handle = None
        self._pid = -1  # process that opened _handle: a forked worker must not share its file offset

    def __len__(self) -> int:
        return int(self.offsets.size)

    def __getstate__(self) -> dict[str, Any]:  # a file handle does not cross process boundaries
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def read(self, i: int) -> Record:
        """Record ``i`` (0-based among non-blank lines); DataError ``path:line: message`` when invalid."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = open(self.path, "rb"), os.getpid()
        self._handle.seek(int(self.offsets[i]))
        return parse_line(self._handle.readline(), self.path, int(self.lines[i]), self.data_dir)

    def where(self, i: int) -> str:
        return f"{self.path}:{int(self.lines[i])}"


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's hash() is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


def shard_order(
    num_records: int, epoch: int, shard: int, num_shards: int, shuffle: bool, seed: Sequence[int] | int
) -> np.ndarray:
    """Record indices (0..num_records-1) that ``shard`` of ``num_shards`` reads in ``epoch``, in order."""
    if shuffle:
        seed_list = [seed] if isinstance(seed, int) else list(seed)
        order = np.random.default_rng(seed_list + [epoch]).permutation(num_records)
    else:
        order = np.arange(num_records)
    return order[shard::num_shards]


def shard_size(num_records: int, shard: int, num_shards: int) -> int:
    """How many records ``shard`` reads per epoch."""
    return len(range(shard, num_records, num_shards))
