"""The training data entry point: :func:`build_loader` -> :class:`PackedLoader`, an endless stream of PackedBatch.

Usage (the trainer)::

    loader = build_loader(DataConfig("mix.yaml"), model_cfg, tokenizer, rank, world_size, state=saved)
    for step, batch in zip(range(steps), loader):
        ...                                   # batch: PackedBatch, batch.sample_kinds = dataset types
        if checkpoint_now:
            save(loader.state_dict())         # JSON-serialisable; per rank
        log(loader.stats)                     # samples, tokens, skipped_too_long, skipped_bad_records, by_type

Sharding: rank ``r`` with ``W`` ranks and ``n`` loader workers (``n = max(num_workers, 1)``) runs
the ``n`` data shards ``r*n + j``; each reads a disjoint share of every group of the mix (see
:mod:`.datasets`), so together the shards cover every record.

Resume: every batch carries the state its worker had right after producing it; the loader keeps
the latest one per worker plus which worker delivers next (torch's DataLoader hands out worker
batches round-robin). A loader built from :meth:`PackedLoader.state_dict` restarts each worker from
its state and rotates the worker ids so the first batch comes from the worker that was next: the
resumed stream equals the uninterrupted one batch for batch. The state is only valid with the same
mix, seed, ``world_size``, rank and ``num_workers``.

State format (``format`` = ``unimedvl-data-state``, ``version`` 1)::

    {"format", "version", "rank", "world_size", "num_workers", "seed",
     "batches": consumed batches, "next_worker": worker delivering the next batch,
     "groups": {"<type>/<group>": records in use},                # to detect a changed mix
     "workers": {"<worker>": {"groups": {"<type>/<group>": {"epoch", "position"}},
                              "rng": generator state, "pending": [{"group", "record", "drops"}],
                              "stats": counters}}}
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unimedvl.config import ModelConfig
from unimedvl.data.config import DataConfig
from unimedvl.data.mixing import Mix, load_mix
from unimedvl.data.packing import Packer, add_stats, new_stats
from unimedvl.data.plans import ModelPaths
from unimedvl.errors import ConfigError, DataError, UserError
from unimedvl.models.packed_batch import PackedBatch
from unimedvl.tokenizer import Tokenizer

STATE_FORMAT = "unimedvl-data-state"
STATE_VERSION = 1


def build_loader(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    tokenizer: Tokenizer,
    rank: int = 0,
    world_size: int = 1,
    state: Mapping[str, Any] | None = None,
) -> PackedLoader:
    """Check the mix against the model, and return the rank's loader (resumed from ``state`` if given)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank} is not within world_size={world_size}")
    mix = load_mix(data_cfg.dataset_config_file, data_cfg.dataset_info_file, model_cfg)
    num_shards = world_size * max(data_cfg.num_workers, 1)
    for g in mix.groups:
        if g.is_mandatory and g.num_records < num_shards:
            raise ConfigError(
                f"mandatory group {g.key} has {g.num_records} record(s), fewer than the {num_shards} "
                "data shards (world_size x num_workers): every shard needs one; lower num_workers"
            )
    if not any(g.weight > 0 and g.num_records >= num_shards for g in mix.groups):
        raise ConfigError(
            f"no group with a positive weight has at least {num_shards} records (one per data shard: "
            "world_size x num_workers); lower num_workers or add data"
        )
    if state is not None:
        _check_state(state, mix, data_cfg, rank, world_size)
    return PackedLoader(mix, data_cfg, model_cfg, tokenizer, rank, world_size, state)


def _check_state(state: Mapping[str, Any], mix: Mix, cfg: DataConfig, rank: int, world_size: int) -> None:
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise ConfigError(
            f"not a data state of this loader (format {state.get('format')!r}, version "
            f"{state.get('version')!r}; expected {STATE_FORMAT!r} version {STATE_VERSION})"
        )
    expected = {"rank": rank, "world_size": world_size, "num_workers": cfg.num_workers, "seed": cfg.seed}
    for key, value in expected.items():
        if state.get(key) != value:
            raise ConfigError(
                f"the data state was saved with {key}={state.get(key)!r} but this run has "
                f"{key}={value!r}; resume with the same {key} (or start the data afresh: state=None)"
            )
    if dict(state["groups"]) != mix.sizes():
        raise ConfigError(
            f"the data state was saved for a different mix (groups and record counts "
            f"{dict(state['groups'])} vs {mix.sizes()}); resume with the same mix or start the "
            "data afresh"
        )


class _Failure:
    """A user error raised in a worker, passed to the main process to be raised there as one line."""

    def __init__(self, err: UserError):
        self.kind = "config" if isinstance(err, ConfigError) else "data"
        self.message = str(err)

    def raise_(self) -> None:
        raise (ConfigError if self.kind == "config" else DataError)(self.message)


def _identity(item: Any) -> Any:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode images; intra-op threads would fight the trainer for cores
    _die_with_parent()


def _die_with_parent() -> None:
    """Have the kernel kill this worker the moment the trainer dies (Linux ``PR_SET_PDEATHSIG``).

    Without it a worker of a SIGKILLed trainer notices only at its next status check (5 s) or when
    its current image finishes decoding, and keeps memory, cores and open files until then.
    """
    if not sys.platform.startswith("linux"):
        return  # elsewhere torch's own check of the parent (every 5 s) ends the worker
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent.pid:  # the trainer died before the request took effect
        os._exit(1)


class _PackStream(IterableDataset):
    """The batches of this rank's workers; each item is (batch, logical worker, worker state after it)."""

    def __init__(
        self,
        mix: Mix,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        tokenizer: Tokenizer,
        rank: int,
        world_size: int,
        states: dict[int, dict],
        offset: int,
    ):
        super().__init__()
        self.mix, self.data_cfg, self.model_cfg, self.tokenizer = mix, data_cfg, model_cfg, tokenizer
        self.rank, self.world_size, self.states, self.offset = rank, world_size, states, offset

    def __iter__(self):
        n = max(self.data_cfg.num_workers, 1)
        info = get_worker_info()
        logical = (self.offset + (info.id if info is not None else 0)) % n
        world_shards = self.world_size * n
        try:
            packer = Packer(
                self.mix,
                self.model_cfg,
                self.tokenizer,
                self.data_cfg,
                shard=self.rank * n + logical,
                num_shards=world_shards,
                state=self.states.get(logical),
            )
            while True:
                batch = packer.next_batch()
                yield batch, logical, packer.state_dict()
        except UserError as err:
            yield _Failure(err)


class PackedLoader:
    """Endless iterable of PackedBatch for one rank; see the module docstring for state and resume."""

    def __init__(
        self,
        mix: Mix,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        tokenizer: Tokenizer,
        rank: int,
        world_size: int,
        state: Mapping[str, Any] | None = None,
    ):
        self.mix = mix
        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        self.tokenizer = tokenizer
        self.rank, self.world_size = rank, world_size
        self._states: dict[int, dict] = {}
        self._batches = 0
        self._next = 0
        if state is not None:
            self._restore(state)

    def _restore(self, state: Mapping[str, Any]) -> None:
        self._states = {int(k): copy.deepcopy(v) for k, v in state["workers"].items()}
        self._batches, self._next = int(state["batches"]), int(state["next_worker"])

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a loader of the same mix and settings)."""
        _check_state(state, self.mix, self.data_cfg, self.rank, self.world_size)
        self._restore(state)

    def __iter__(self) -> Iterator[PackedBatch]:
        """Batches from the current state on (a second ``iter`` continues, it does not restart)."""
        n = max(self.data_cfg.num_workers, 1)
        stream = _PackStream(
            self.mix,
            self.data_cfg,
            self.model_cfg,
            self.tokenizer,
            self.rank,
            self.world_size,
            copy.deepcopy(self._states),
            self._next,
        )
        if self.data_cfg.num_workers == 0:
            items = iter(stream)
        else:
            items = iter(
                DataLoader(
                    stream,
                    batch_size=None,
                    num_workers=self.data_cfg.num_workers,
                    collate_fn=_identity,
                    worker_init_fn=_worker_init,
                    prefetch_factor=2,
                )
            )
        for item in items:
            if isinstance(item, _Failure):
                item.raise_()
            batch, logical, worker_state = item
            self._states[logical] = worker_state
            self._batches += 1
            self._next = (logical + 1) % n
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The data state after the batches consumed so far (JSON-serialisable; store it per rank)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.data_cfg.num_workers,
            "seed": self.data_cfg.seed,
            "batches": self._batches,
            "next_worker": self._next,
            "groups": self.mix.sizes(),
            "workers": {str(k): copy.deepcopy(v) for k, v in sorted(self._states.items())},
        }

    @property
    def stats(self) -> dict[str, Any]:
        """Counters over this rank's consumed batches: batches, samples, tokens, skipped_too_long,
        skipped_bad_records, and the same per dataset type under ``by_type``."""
        total = new_stats()
        for state in self._states.values():
            add_stats(total, state["stats"])
        return total

    def has_generation_data(self) -> bool:
        """Some sampled group trains image generation (flow loss) on this model."""
        paths = ModelPaths.of(self.model_cfg)
        return any((g.weight > 0 or g.is_mandatory) and g.plan.generates(paths) for g in self.mix.groups)

    def image_transforms(self):
        """(VAE, ViT) transform of the sampled groups; where groups differ, the one with the most weight."""
        out = []
        for attr in ("vae_transform", "vit_transform"):
            weights: dict = {}
            for g in self.mix.groups:
                t = getattr(g, attr)
                if t is not None and (g.weight > 0 or g.is_mandatory):
                    weights[t] = weights.get(t, 0.0) + g.weight
            out.append(max(weights, key=weights.get) if weights else None)
        return out[0], out[1]

    def has_understanding_data(self) -> bool:
        """Some sampled group trains text (cross-entropy) on this model."""
        paths = ModelPaths.of(self.model_cfg)
        return any((g.weight > 0 or g.is_mandatory) and g.plan.understands(paths) for g in self.mix.groups)
