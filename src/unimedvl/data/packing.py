"""Packing: draw samples from the mix of one data shard and pack them into PackedBatches.

One :class:`Packer` serves one data shard (one rank x loader worker). For each pack:

1. samples waiting in the overflow queue go first, in order, while they fit;
2. one fresh sample of every mandatory group not already in the pack or the queue;
3. while the queue is empty and the pack holds fewer than ``expected_num_tokens`` tokens, a sample
   of a group drawn by weight; one that would push the pack past ``max_num_tokens`` goes to the
   queue and the pack is emitted.

So a pack never exceeds ``max_num_tokens``, the queue never holds more than one sample per
mandatory group plus one, and every queued sample fits into the next pack (a sample's length is at
most ``max_num_tokens_per_sample <= max_num_tokens``). A sample longer than
``max_num_tokens_per_sample`` is skipped and counted (``stats["skipped_too_long"]``), as is a bad
record under ``bad_record_policy="skip"`` (``skipped_bad_records``); under ``"fail"`` a bad record
stops training with its ``path:line`` and the reason. Lengths are known before any image is
decoded (text is encoded, image sizes come from the record or the file header and the transform),
so over-long samples cost no decoding.

Reading order: each group's records are read in its shard's order for the current epoch
(:func:`~unimedvl.data.datasets.shard_order`); when the shard is exhausted the group starts its
next epoch, reshuffled. Every random choice (group, dropout) comes from one seeded generator.

State (:meth:`Packer.state_dict`, JSON-serialisable): per group ``epoch`` and ``position`` (records
of the epoch's shard order consumed), the generator's state, the queued samples (group, record,
dropout decisions: they are rebuilt on restore) and the counters. Restoring it continues the
stream exactly.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from unimedvl.config import ModelConfig
from unimedvl.data.config import DataConfig
from unimedvl.data.datasets import shard_order, shard_size, stable_hash
from unimedvl.data.mixing import Mix, MixGroup
from unimedvl.data.plans import Drops, ModelPaths, SampleBuilder
from unimedvl.data.records import confinement_problem
from unimedvl.errors import ConfigError, DataError, capped
from unimedvl.models.packed_batch import PackedBatch, SplitSpec, build_packed_batch
from unimedvl.tokenizer import Tokenizer

__all__ = ["Packer", "new_stats", "add_stats"]

log = logging.getLogger("unimedvl.data")

_COUNTERS = ("samples", "tokens", "skipped_too_long", "skipped_bad_records")


def new_stats() -> dict[str, Any]:
    """Zeroed counters: batches, samples, tokens, skips, and the same per dataset type under ``by_type``."""
    return {"batches": 0, **{k: 0 for k in _COUNTERS}, "by_type": {}}


MAX_SKIP_NOTES = 32  # the latest skipped records kept (file:line: why) for the trainer to log, per shard


def add_stats(total: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add the counters of ``part`` into ``total`` (in place) and return it; skip notes are gathered."""
    for key in ("batches",) + _COUNTERS:
        total[key] += part[key]
    if part.get("skip_notes"):
        total.setdefault("skip_notes", []).extend(part["skip_notes"])
    for kind, counters in part["by_type"].items():
        mine = total["by_type"].setdefault(kind, {k: 0 for k in _COUNTERS})
        for key in _COUNTERS:
            mine[key] += counters[key]
    return total


@dataclass
class _Sample:
    """A sample ready to pack: where it came from (for the state) and its splits."""

    group: int
    record: int
    drops: Drops
    splits: list[SplitSpec]
    num_tokens: int


class Packer:
    """Draws, measures and packs samples for one data shard; :meth:`next_batch` gives the next pack."""

    def __init__(
        self,
        mix: Mix,
        model_cfg: ModelConfig,
        tokenizer: Tokenizer,
        cfg: DataConfig,
        shard: int = 0,
        num_shards: int = 1,
        state: Mapping[str, Any] | None = None,
    ):
        self.mix = mix
        self.groups: list[MixGroup] = mix.groups
        self.model_cfg = model_cfg
        self.special = tokenizer.special
        self.cfg = cfg
        self.shard, self.num_shards = shard, num_shards
        self.paths = ModelPaths.of(model_cfg)
        self.builders = [
            SampleBuilder(tokenizer, model_cfg, g.vae_transform, g.vit_transform, cfg.max_image_pixels)
            for g in self.groups
        ]
        self._told: set[str] = set()  # notices already logged by this shard (each is said once)
        self.sizes = [shard_size(g.num_records, shard, num_shards) for g in self.groups]
        for g, size in zip(self.groups, self.sizes):
            if g.is_mandatory and size == 0:
                raise ConfigError(
                    f"mandatory group {g.key} has {g.num_records} record(s), fewer than the "
                    f"{num_shards} data shards (world_size x num_workers); lower num_workers"
                )
        self.weighted = [i for i, (g, size) in enumerate(zip(self.groups, self.sizes)) if g.weight > 0 and size]
        if not self.weighted:
            raise ConfigError(
                f"data shard {shard} of {num_shards} has no records of any group with a positive weight; "
                "lower num_workers or add data"
            )
        weights = np.array([self.groups[i].weight for i in self.weighted], dtype=np.float64)
        self._cumulative = np.cumsum(weights / weights.sum())
        self.mandatory = [i for i, g in enumerate(self.groups) if g.is_mandatory]
        self.cursors = [[0, 0] for _ in self.groups]  # per group: [epoch, position in the epoch's shard order]
        self._orders: dict[int, tuple[int, np.ndarray]] = {}
        self.rng = np.random.default_rng([cfg.seed, shard, num_shards])
        self.queue: list[_Sample] = []
        self.stats = new_stats()
        self._probs = np.array([cfg.text_cond_dropout_prob, cfg.vit_cond_dropout_prob, cfg.vae_cond_dropout_prob])
        if state is not None:
            self.load_state_dict(state)

    # -- reading ------------------------------------------------------------------------------

    def _next_record(self, gi: int) -> int:
        cursor = self.cursors[gi]
        if cursor[1] >= self.sizes[gi]:
            cursor[0], cursor[1] = cursor[0] + 1, 0
        epoch = cursor[0]
        cached = self._orders.get(gi)
        if cached is None or cached[0] != epoch:
            g = self.groups[gi]
            seed = [g.shuffle_seed, self.cfg.seed, stable_hash(g.key)]
            cached = (epoch, shard_order(g.num_records, epoch, self.shard, self.num_shards, g.shuffle_lines, seed))
            self._orders[gi] = cached
        k = int(cached[1][cursor[1]])
        cursor[1] += 1
        return k

    def _build(self, gi: int, k: int, drops: Drops) -> _Sample:
        """Plan, measure and load record ``k`` of group ``gi``; DataError (with path:line) when it is bad.

        Returns a sample with empty splits when it is too long (measured before loading images).
        """
        group = self.groups[gi]
        record = group.read(k)  # parse errors already name path:line
        limit = self.cfg.max_num_tokens_per_sample
        try:
            self._check_confinement(group, k, record)
            items = group.plan.plan(record, drops, self.paths)
            measured = self.builders[gi].measure(items, limit=limit)  # a huge text is bounded, not tokenised
            if measured.num_tokens > limit:
                at_least = "" if measured.encoded else "at least "
                self._tell(
                    "too_long",
                    f"{group.where(k)}: sample of {at_least}{measured.num_tokens} tokens skipped "
                    f"(max_num_tokens_per_sample={limit}); later ones are only counted (skipped_too_long)",
                )
                return _Sample(gi, k, drops, [], measured.num_tokens)
            splits, num_tokens = self.builders[gi].materialize(measured)
        except DataError as err:
            raise DataError(f"{group.where(k)}: {err}") from None
        return _Sample(gi, k, drops, splits, num_tokens)

    def _note_skip(self, why: str) -> None:
        """Remember a skipped record (file:line: why, capped) in the stats; the trainer logs each one once."""
        notes = self.stats.setdefault("skip_notes", [])
        notes.append(capped(why, 300))
        del notes[:-MAX_SKIP_NOTES]

    def _tell(self, key: str, message: str) -> None:
        """Log ``message`` the first time ``key`` comes up in this shard."""
        if key not in self._told:
            self._told.add(key)
            log.warning(message)

    def _check_confinement(self, group: MixGroup, k: int, record) -> None:
        """Images outside the dataset's data_dir: a bad record with confine_data_dir, else said once."""
        problem = confinement_problem(record, group.data_dir(k))
        if problem is None:
            return
        if self.cfg.confine_data_dir:
            raise DataError(f"{problem}; move it inside, or train without confine_data_dir")
        self._tell("outside", f"{group.where(k)}: {problem}; confine_data_dir=True refuses such records")

    def _draw(self, gi: int) -> _Sample:
        """The next usable sample of group ``gi`` (too-long and, if allowed, bad records skipped and counted)."""
        group = self.groups[gi]
        kind = self.stats["by_type"].setdefault(group.dataset_type, {k: 0 for k in _COUNTERS})
        for _ in range(max(1, self.sizes[gi])):
            k = self._next_record(gi)
            drops = Drops.from_list(self.rng.random(3) < self._probs)
            try:
                sample = self._build(gi, k, drops)
            except DataError as err:
                if self.cfg.bad_record_policy == "fail":
                    raise DataError(f"{err} (bad_record_policy='skip' skips and counts bad records)") from None
                self.stats["skipped_bad_records"] += 1
                kind["skipped_bad_records"] += 1
                self._note_skip(str(err))
                continue
            if sample.num_tokens > self.cfg.max_num_tokens_per_sample:
                self.stats["skipped_too_long"] += 1
                kind["skipped_too_long"] += 1
                self._note_skip(
                    f"{group.where(k)}: {sample.num_tokens} tokens > max_num_tokens_per_sample="
                    f"{self.cfg.max_num_tokens_per_sample}"
                )
                continue
            return sample
        raise DataError(
            f"group {group.key}: all {self.sizes[gi]} record(s) of data shard {self.shard} were skipped in "
            f"a row (too long: {kind['skipped_too_long']}, bad: {kind['skipped_bad_records']} so far); "
            f"raise max_num_tokens_per_sample, shrink the images, or fix the records"
        )

    def _choose(self) -> int:
        return self.weighted[
            int(np.searchsorted(self._cumulative, self.rng.random(), side="right").clip(0, len(self.weighted) - 1))
        ]

    # -- packing ------------------------------------------------------------------------------

    def next_batch(self) -> PackedBatch:
        """Draw and pack the next batch (see the module docstring for the order)."""
        limit, expected = self.cfg.max_num_tokens, self.cfg.expected_num_tokens
        pack: list[_Sample] = []
        tokens = 0
        waiting: list[_Sample] = []
        for sample in self.queue:
            if tokens + sample.num_tokens <= limit:
                pack.append(sample)
                tokens += sample.num_tokens
            else:
                waiting.append(sample)
        self.queue = waiting
        present = {s.group for s in pack + self.queue}
        for gi in self.mandatory:
            if gi in present:
                continue
            sample = self._draw(gi)
            if tokens + sample.num_tokens <= limit:
                pack.append(sample)
                tokens += sample.num_tokens
            else:
                self.queue.append(sample)
        while not self.queue and tokens < expected:
            sample = self._draw(self._choose())
            if tokens + sample.num_tokens <= limit:
                pack.append(sample)
                tokens += sample.num_tokens
            else:
                self.queue.append(sample)
        kinds = [self.groups[s.group].dataset_type for s in pack]
        batch = build_packed_batch(
            [s.splits for s in pack], self.special, self.model_cfg, ce_weighting=self.cfg.ce_weighting, kinds=kinds
        )
        self.stats["batches"] += 1
        for sample, kind in zip(pack, kinds):
            self.stats["samples"] += 1
            self.stats["tokens"] += sample.num_tokens
            self.stats["by_type"][kind]["samples"] += 1
            self.stats["by_type"][kind]["tokens"] += sample.num_tokens
        return batch

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The shard's reading position, generator, queue and counters (JSON-serialisable)."""
        rng = self.rng.bit_generator.state
        return {
            "groups": {g.key: {"epoch": c[0], "position": c[1]} for g, c in zip(self.groups, self.cursors)},
            "rng": {
                "bit_generator": rng["bit_generator"],
                "state": {k: str(v) for k, v in rng["state"].items()},
                "has_uint32": int(rng["has_uint32"]),
                "uinteger": int(rng["uinteger"]),
            },
            "pending": [
                {"group": self.groups[s.group].key, "record": s.record, "drops": s.drops.to_list()} for s in self.queue
            ],
            "stats": copy.deepcopy(self.stats),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; queued samples are rebuilt from their records."""
        keys = {g.key: i for i, g in enumerate(self.groups)}
        saved = state["groups"]
        if set(saved) != set(keys):
            raise ConfigError(
                f"the data state is for groups {sorted(saved)} but the mix has {sorted(keys)}; "
                "resume with the same mix or start the data afresh"
            )
        for key, cursor in saved.items():
            self.cursors[keys[key]] = [int(cursor["epoch"]), int(cursor["position"])]
        rng = state["rng"]
        self.rng.bit_generator.state = {
            "bit_generator": rng["bit_generator"],
            "state": {k: int(v) for k, v in rng["state"].items()},
            "has_uint32": rng["has_uint32"],
            "uinteger": rng["uinteger"],
        }
        self.queue = []
        for item in state["pending"]:
            gi = keys[item["group"]]
            self.queue.append(self._build(gi, int(item["record"]), Drops.from_list(item["drops"])))
        self.stats = copy.deepcopy(dict(state["stats"]))
