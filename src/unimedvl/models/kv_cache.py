"""KV cache for inference: several contexts in one batch, growing buffers, cheap forks.

What it stores
    For every decoder layer one key buffer and one value buffer of shape
    ``(row_capacity, Hkv, capacity, head_dim)``. A *row* is one context (a conversation, or one
    guidance branch such as ``cfg_text``). Row ``r`` holds ``lengths[r]`` valid positions,
    left-aligned: positions ``[0, lengths[r])``. Everything after that is slack. Keys are stored
    after RoPE and qk-norm, so they never need recomputing. Which expert produced a key does not
    matter to later queries (attention is joint), so the cache does not record it.

Growth
    ``capacity`` (positions) and ``row_capacity`` (contexts) grow geometrically (doubling), so
    appending ``n`` tokens one at a time costs O(n) amortised copying in total, never a full
    copy per decoding step. ``reserve`` can preallocate when the final length is known.

A forward with the cache (``KVCache.plan`` -> ``CacheStep``)
    New tokens arrive packed: ``query_lens[b]`` tokens for row ``rows[b]``, concatenated in the
    order of ``rows``. Each layer writes the new keys/values at ``[lengths[r], lengths[r] + q)``
    and runs one batched SDPA over all rows of the step, with a padding mask when lengths differ
    (no mask when all rows have equal lengths and the new tokens see each other fully, e.g. one
    decoded token per row or one denoising query per guidance branch). Among the new tokens the
    mode is ``causal`` (text) or ``full`` (an image block), per row if needed. The new tokens
    always see all cached tokens of their row and never another row.

    ``write=True`` commits the new tokens (``step.commit()`` advances ``lengths``): prefill and
    decoding. ``write=False`` reads without writing: the new keys go only into the slack after
    the valid length and ``lengths`` never moves, so the next step overwrites them. That is the
    denoising query: it attends to the context plus itself, 50 times, and the context is never
    copied.

    Rows of one step should be a contiguous increasing range (e.g. all rows, or one row); then
    the attention reads buffer views. Any other set of rows works but gathers a copy of those
    rows' keys per layer.

Forks
    ``fork(row)`` adds a new row holding a copy of ``row``'s valid keys/values (one memcpy of
    that context, done once; no recompute, nothing copied per step later). This is how the
    guidance contexts are made: ``cfg_text = cache.fork(full)`` before a text is added to
    ``full``. ``select(rows)`` makes a new cache of a subset (e.g. to drop finished branches),
    ``truncate`` rolls a row back.

Devices
    Each layer's buffers live where that layer runs (``layer_devices``; by default all on
    ``device``), so a model whose decoder layers are spread over several GPUs keeps every
    layer's keys beside its weights. A step's index tensors and mask are copied once per device.

The cache is an inference structure (used under ``torch.no_grad()``): writes are in place.
Lengths are kept as Python ints, so planning never synchronises with the device. Rope ids are
the caller's business (a context's next rope id lives with the context state in inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unimedvl.errors import DataError

_GROW_MULTIPLE = 64  # capacity is rounded up to this many positions


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


class _PerDevice:
    """A small CPU-built tensor, copied once to each device that asks for it."""

    def __init__(self, build):
        self._build, self._copies = build, {}

    def on(self, device: torch.device) -> Tensor:
        if device not in self._copies:
            self._copies[device] = self._build().to(device)
        return self._copies[device]


@dataclass
class _StepIndexes:
    """Where a step's new tokens go and what they see, on one device."""

    row_idx: Tensor  # (N,) cache row of each new token
    pos_idx: Tensor  # (N,) cache position of each new token
    row_tensor: Tensor  # (nb,) the step's rows
    flat_idx: Tensor | None  # (N,) packed token -> (nb * qmax) grid slot (unequal query lengths)
    mask: Tensor | None  # (nb, 1, qmax, key_len) visibility, or None

    def to(self, device: torch.device) -> _StepIndexes:
        return _StepIndexes(
            *(
                None if t is None else t.to(device)
                for t in (self.row_idx, self.pos_idx, self.row_tensor, self.flat_idx, self.mask)
            )
        )


class KVCache:
    """Preallocated per-layer key/value buffers for a batch of contexts (rows)."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        rows: int = 1,
        capacity: int = 256,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        layer_devices: Sequence[torch.device | str] | None = None,
    ):
        """``layer_devices``: the device of each layer's buffers (default: ``device`` for all)."""
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.dtype = dtype
        if layer_devices is None:
            self.layer_devices = [torch.device(device)] * num_layers
        else:
            self.layer_devices = [torch.device(d) for d in layer_devices]
            if len(self.layer_devices) != num_layers:
                raise DataError(f"KVCache: {len(self.layer_devices)} layer devices for {num_layers} layers")
        self.device = self.layer_devices[0] if num_layers else torch.device(device)  # where step indexes are built
        self.lengths: list[int] = [0] * rows  # valid positions per row
        self._cap = _round_up(max(capacity, 1), _GROW_MULTIPLE)
        self._row_cap = max(rows, 1)
        shape = (self._row_cap, num_kv_heads, self._cap, head_dim)
        # keys[l], values[l]: (row_capacity, Hkv, capacity, D) on layer_devices[l]
        self.keys = [torch.zeros(shape, dtype=dtype, device=d) for d in self.layer_devices]
        self.values = [torch.zeros(shape, dtype=dtype, device=d) for d in self.layer_devices]

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        """Positions per row that fit without reallocating."""
        return self._cap

    def _realloc(self, row_cap: int, cap: int) -> None:
        # Copy only what is valid: rows in use, positions up to the longest row.
        n, used = self.num_rows, max(self.lengths, default=0)
        shape = (row_cap, self.num_kv_heads, cap, self.head_dim)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                # Zeros, not empty: masked slack still enters SDPA's product with the values,
                # and garbage NaNs there would poison the output.
                new = torch.zeros(shape, dtype=self.dtype, device=old.device)
                new[:n, :, :used] = old[:n, :, :used]
                store[i] = new
        self._row_cap, self._cap = row_cap, cap

    def reserve(self, length: int) -> None:
        """Make sure every row can hold ``length`` positions (grows by doubling)."""
        if length > self._cap:
            self._realloc(self._row_cap, _round_up(max(length, 2 * self._cap), _GROW_MULTIPLE))

    def add_rows(self, n: int = 1) -> list[int]:
        """Append ``n`` empty contexts; returns their row ids."""
        first = self.num_rows
        if first + n > self._row_cap:
            self._realloc(max(first + n, 2 * self._row_cap), self._cap)
        self.lengths.extend([0] * n)
        return list(range(first, first + n))

    def fork(self, row: int) -> int:
        """A new row holding a copy of ``row``'s context; returns the new row id."""
        self._check_row(row)
        (new,) = self.add_rows(1)
        n = self.lengths[row]
        for store in (self.keys, self.values):
            for buf in store:
                buf[new, :, :n] = buf[row, :, :n]
        self.lengths[new] = n
        return new

    def select(self, rows: Sequence[int]) -> KVCache:
        """A new cache holding copies of ``rows`` (in that order) as rows 0..len(rows)-1."""
        for r in rows:
            self._check_row(r)
        out = KVCache(
            self.num_layers,
            self.num_kv_heads,
            self.head_dim,
            rows=len(rows),
            capacity=max([self.lengths[r] for r in rows] + [1]),
            dtype=self.dtype,
            device=self.device,
            layer_devices=self.layer_devices,
        )
        idx = _PerDevice(lambda: torch.tensor(list(rows), dtype=torch.long))
        used = max([self.lengths[r] for r in rows] + [0])
        for src, dst in ((self.keys, out.keys), (self.values, out.values)):
            for s, d in zip(src, dst):
                d[: len(rows), :, :used] = s.index_select(0, idx.on(s.device))[:, :, :used]
        out.lengths = [self.lengths[r] for r in rows]
        return out

    def adopt(self, other: KVCache, rows: Sequence[int]) -> list[int]:
        """Append copies of ``other``'s ``rows`` (same layers, heads, dtype, devices) as new rows; their ids."""
        need = max([other.lengths[r] for r in rows] + [1])
        self.reserve(need)
        new = self.add_rows(len(rows))
        for src, dst in ((other.keys, self.keys), (other.values, self.values)):
            for s, d in zip(src, dst):
                for r, n in zip(rows, new):
                    d[n, :, : other.lengths[r]] = s[r, :, : other.lengths[r]]
        for r, n in zip(rows, new):
            self.lengths[n] = other.lengths[r]
        return new

    def truncate(self, row: int, length: int) -> None:
        """Forget positions ``>= length`` of ``row`` (roll a context back)."""
        self._check_row(row)
        if not 0 <= length <= self.lengths[row]:
            raise DataError(f"KVCache.truncate: length {length} outside [0, {self.lengths[row]}] for row {row}")
        self.lengths[row] = length

    def _check_row(self, row: int) -> None:
        if not 0 <= row < self.num_rows:
            raise DataError(f"KV cache row {row} does not exist (the cache has {self.num_rows} rows)")

    # -- one forward ----------------------------------------------------------------------

    def plan(
        self,
        rows: Sequence[int] | None = None,
        query_lens: Sequence[int] | int = 1,
        mode: str | Sequence[str] = "causal",
        write: bool = True,
    ) -> CacheStep:
        """Prepare one forward of new tokens against this cache (shared by all layers).

        rows: contexts that receive new tokens (default: all rows, in order).
        query_lens: new tokens per row (an int means the same for every row).
        mode: ``causal`` or ``full`` among the new tokens, one for all rows or one per row.
        write: commit the new keys/values (prefill, decoding) or only read (denoising).
        """
        return CacheStep(self, rows, query_lens, mode, write)


class CacheStep:
    """One forward of packed new tokens against a KVCache; ``attend`` is called once per layer."""

    def __init__(self, cache: KVCache, rows, query_lens, mode, write: bool):
        rows = list(range(cache.num_rows)) if rows is None else [int(r) for r in rows]
        if not rows:
            raise DataError("KV cache step: rows is empty; pass at least one context row")
        for r in rows:
            cache._check_row(r)
        if len(set(rows)) != len(rows):
            raise DataError(f"KV cache step: rows {rows} repeat a row; fork the context instead")
        qlens = [int(query_lens)] * len(rows) if isinstance(query_lens, int) else [int(q) for q in query_lens]
        modes = [mode] * len(rows) if isinstance(mode, str) else list(mode)
        if len(qlens) != len(rows) or len(modes) != len(rows):
            raise DataError(
                f"KV cache step: query_lens ({len(qlens)}) and mode ({len(modes)}) need one entry per row "
                f"({len(rows)} rows)"
            )
        if min(qlens) < 1:
            raise DataError(f"KV cache step: query_lens must be >= 1 per row, got {qlens}")
        for m in modes:
            if m not in ("causal", "full"):
                raise DataError(f"KV cache step: mode {m!r} is unknown; choose 'causal' or 'full'")
        self.cache, self.rows, self.query_lens, self.modes, self.write = cache, rows, qlens, modes, write
        self.past = [cache.lengths[r] for r in rows]
        self.num_tokens = sum(qlens)
        self._committed = False
        dev = cache.device

        ends = [p + q for p, q in zip(self.past, qlens)]
        cache.reserve(max(ends))
        self.key_len = max(ends)  # keys read per row (padding masked)
        nb, qmax = len(rows), max(qlens)
        self.qmax = qmax

        # Where each packed new token goes: cache row and position. Built from Python lists
        # (a handful of rows), one host->device copy each (per device the layers live on).
        row_idx = torch.tensor([r for r, q in zip(rows, qlens) for _ in range(q)], device=dev)
        pos_idx = torch.tensor([p + i for p, q in zip(self.past, qlens) for i in range(q)], device=dev)

        # Rows as a contiguous range read buffer views; others are gathered.
        self._row_slice = slice(rows[0], rows[0] + nb) if rows == list(range(rows[0], rows[0] + nb)) else None
        row_tensor = torch.tensor(rows, device=dev)

        # Packed queries -> (nb, qmax) grid; padding only when query lengths differ.
        self._equal_q = len(set(qlens)) == 1
        flat_idx = None
        if not self._equal_q:
            flat_idx = torch.tensor([b * qmax + i for b, q in enumerate(qlens) for i in range(q)], device=dev)

        # Mask (nb, 1, qmax, key_len) unless every query may see every key of its row.
        same_past = len(set(self.past)) == 1
        needs_mask = not (same_past and self._equal_q and (qmax == 1 or all(m == "full" for m in modes)))
        # Causal prefill of empty rows: SDPA's is_causal (aligned at the top-left) is exactly right.
        self.is_causal = (
            needs_mask and same_past and self.past[0] == 0 and self._equal_q and all(m == "causal" for m in modes)
        )
        needs_mask = needs_mask and not self.is_causal
        mask = None
        if needs_mask:
            past = torch.tensor(self.past)[:, None, None]
            ql = torch.tensor(qlens)[:, None, None]
            full = torch.tensor([m == "full" for m in modes])[:, None, None]
            i = torch.arange(qmax)[None, :, None]
            j = torch.arange(self.key_len)[None, None, :]
            rel = j - past  # key position relative to the first new token
            # Cached keys always; new keys of the row: all (full) or up to the query (causal).
            # Padded query rows (i >= q_b) see the new keys too, so no row is fully masked.
            visible = (rel < 0) | ((rel < ql) & (full | (rel <= i)))
            mask = visible[:, None].to(dev)
        self.mask = mask
        self._indexes = {dev: _StepIndexes(row_idx, pos_idx, row_tensor, flat_idx, mask)}

    def _on(self, device: torch.device) -> _StepIndexes:
        """This step's index tensors and mask on ``device`` (copied once per device of a layer)."""
        if device not in self._indexes:
            self._indexes[device] = self._indexes[self.cache.device].to(device)
        return self._indexes[device]

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
        """Write this layer's new k/v, attend over cache + new; q: (N, Hq, D), k/v: (N, Hkv, D) -> (N, Hq, D)."""
        if q.shape[0] != self.num_tokens:
            raise DataError(f"KV cache step: got {q.shape[0]} new tokens, planned {self.num_tokens}")
        if self._committed:
            raise DataError("KV cache step: already committed; plan a new step for the next forward")
        kbuf, vbuf = self.cache.keys[layer], self.cache.values[layer]
        ix = self._on(kbuf.device)
        # Written even when write=False: positions past the valid length are slack, and the
        # lengths only move on commit, so a read-only step leaves the context unchanged.
        kbuf[ix.row_idx, :, ix.pos_idx] = k.to(kbuf.dtype)
        vbuf[ix.row_idx, :, ix.pos_idx] = v.to(vbuf.dtype)
        if self._row_slice is not None:
            keys = kbuf[self._row_slice, :, : self.key_len]  # (nb, Hkv, L, D) view
            values = vbuf[self._row_slice, :, : self.key_len]
        else:
            keys = kbuf.index_select(0, ix.row_tensor)[:, :, : self.key_len]
            values = vbuf.index_select(0, ix.row_tensor)[:, :, : self.key_len]

        nb, H, D = len(self.rows), q.shape[1], q.shape[2]
        if self._equal_q:
            qg = q.view(nb, self.qmax, H, D).transpose(1, 2)  # (nb, Hq, qmax, D)
        else:
            qg = q.new_zeros(nb * self.qmax, H, D)
            qg[ix.flat_idx] = q
            qg = qg.view(nb, self.qmax, H, D).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            qg, keys, values, attn_mask=ix.mask, is_causal=self.is_causal, scale=scale, enable_gqa=H != keys.shape[1]
        )
        out = out.transpose(1, 2).reshape(nb * self.qmax, H, D)
        return out if self._equal_q else out[ix.flat_idx]

    def commit(self) -> None:
        """After the last layer: advance the rows' lengths when this step writes."""
        if self.write and not self._committed:
            for r, q in zip(self.rows, self.query_lens):
                self.cache.lengths[r] += q
        self._committed = True

    @property
    def last_token_index(self) -> Tensor:
        """(nb,) index of each row's last new token in the packed step (e.g. for next-token logits)."""
        return torch.tensor(self.query_lens).cumsum(0) - 1
