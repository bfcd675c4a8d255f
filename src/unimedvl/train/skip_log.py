"""Skipped training records, counted where a user looks (``bad_record_policy: skip``, too-long samples).

The packer (``data/packing.py``) counts every skipped record and keeps the latest few notes
(``file:line: why``) in the loader's stats, which travel with each batch from the worker
processes. After each step :class:`SkipLog`

* logs each skipped record once in train.log (``skipped data/train.jsonl:7: ...``), on the rank
  that drew it (rank 0's notes reach train.log, the others' their stderr);
* puts the running counts of the whole job (summed over ranks) into the step's metrics, so
  metrics.jsonl, TensorBoard and the step line carry ``skipped_bad_records`` / ``skipped_too_long``
  once any record was skipped;
* gives the run's total for its last line (``summary``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger("unimedvl.train")

KEYS = ("skipped_bad_records", "skipped_too_long")


class SkipLog:
    """Follows a loader's skip counters; ``update(metrics)`` on every rank after every step."""

    def __init__(self, loader: Any, info: Any = None):
        self.loader, self.info = loader, info
        self.told: set[str] = set()
        self.totals = dict.fromkeys(KEYS, 0)

    def _stats(self) -> Mapping[str, Any]:
        stats = getattr(self.loader, "stats", None)
        return stats if isinstance(stats, Mapping) else {}

    def update(self, metrics: dict[str, float]) -> None:
        """Warn once per new skip note and add the run's skip totals (summed over ranks) to ``metrics``."""
        stats = self._stats()
        for note in stats.get("skip_notes", ()):
            if note not in self.told:
                self.told.add(note)
                log.warning("skipped %s", note)
        counts = torch.tensor([float(stats.get(k, 0)) for k in KEYS], dtype=torch.float64)
        if self.info is not None and getattr(self.info, "distributed", False):
            import torch.distributed as dist

            device_counts = counts.to(self.info.device)
            dist.all_reduce(device_counts, op=dist.ReduceOp.SUM)
            counts = device_counts.cpu()
        self.totals = {k: int(v) for k, v in zip(KEYS, counts.tolist())}
        if any(self.totals.values()):
            metrics.update({k: float(v) for k, v in self.totals.items()})

    def summary(self) -> str | None:
        """The run's last word on skipped records (None when nothing was skipped)."""
        bad, long = self.totals["skipped_bad_records"], self.totals["skipped_too_long"]
        if not bad + long:
            return None
        return (
            f"{bad + long} record(s) skipped in this run ({bad} bad, {long} longer than "
            "max_num_tokens_per_sample); each is named once above with its file:line"
        )

    def log_summary(self) -> None:
        """Warn at the end of a run how many records were skipped, if any."""
        if self.summary():
            log.warning(self.summary())
