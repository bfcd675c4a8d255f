"""Packed attention: one 1-D sequence holding several samples, each a list of attention splits.

A training batch is packed into one sequence of ``T`` tokens (no padding). Each sample is a list
of splits and every split has a mode (spec unified-model.md section 3):

- ``causal`` (text): causal inside the split; sees every earlier split of its sample.
- ``full`` (ViT image, clean VAE image): bidirectional inside; sees earlier splits.
- ``noise`` (noised VAE target): bidirectional inside, sees earlier splits, and no other split
  ever attends to it (later tokens must not see the noised image).
- Never across samples.

``PackedLayout`` describes such a sequence and ``packed_attention`` runs attention over it with
one of several interchangeable backends:

- ``sdpa``: one ``scaled_dot_product_attention`` call per sample with a mask of that sample only,
  so memory grows with the sum of squared sample lengths (never the squared pack length). A
  sample that is a single causal or single full split needs no mask at all (fast kernels).
  Forward and backward on every device.
- ``flex``: ``flex_attention`` with a ``BlockMask`` built from document ids and split modes
  (compiled on CUDA; eager on CPU, where PyTorch has no flex backward).
- ``flash``: flash-attn varlen kernels (CUDA, optional package); only for layouts where every
  sample is a single split and all samples share the mode.
- ``auto``: the fastest of those that supports the call; callers never see which.

All backends compute the same function (fp32 agreement within 1e-5). Grouped-query attention
(fewer key/value heads than query heads) is handled here: callers pass k/v with their own
head count. The inference path (queries against a KV cache) lives in ``kv_cache.py``.
"""

from __future__ import annotations

import functools
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unimedvl.errors import ConfigError, DataError

MODES = ("causal", "full", "noise")
BACKENDS = ("auto", "sdpa", "flex", "flash")

# Integer codes of the modes, used in per-token tensors (flex mask) and mask building.
_CAUSAL, _FULL, _NOISE = 0, 1, 2
_MODE_CODE = {"causal": _CAUSAL, "full": _FULL, "noise": _NOISE}


@dataclass(frozen=True)
class Split:
    """One attention split: ``length`` tokens starting at ``start`` (pack offset) with a mode."""

    start: int
    length: int
    mode: str


class PackedLayout:
    """Describes one packed 1-D sequence of several samples, each a list of splits.

    Immutable once built; masks derived from it (per-sample masks, the flex BlockMask) are
    cached on the object, so one layout shared by all decoder layers builds them once.
    """

    def __init__(self, samples: Sequence[Sequence[Split]]):
        self.samples: tuple[tuple[Split, ...], ...] = tuple(tuple(s) for s in samples)
        self.sample_lens: list[int] = [sum(sp.length for sp in s) for s in self.samples]
        self.sample_starts: list[int] = [s[0].start if s else 0 for s in self.samples]
        self.total_len: int = sum(self.sample_lens)
        self._cache: dict[tuple, object] = {}

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_splits(cls, samples: Sequence[Sequence[tuple[int, str]]]) -> PackedLayout:
        """Build from ``[[(length, mode), ...] per sample]``; samples are packed in order."""
        if len(samples) == 0:
            raise DataError("PackedLayout.from_splits: samples is empty; pass at least one sample")
        built: list[list[Split]] = []
        offset = 0
        for i, sample in enumerate(samples):
            if len(sample) == 0:
                raise DataError(f"PackedLayout.from_splits: sample {i} has no splits")
            splits = []
            for j, item in enumerate(sample):
                try:
                    length, mode = item
                except (TypeError, ValueError):
                    raise DataError(
                        f"PackedLayout.from_splits: sample {i} split {j} must be (length, mode), got {item!r}"
                    ) from None
                if mode not in _MODE_CODE:
                    raise DataError(
                        f"PackedLayout.from_splits: sample {i} split {j} has unknown mode {mode!r}; "
                        f"choose one of {', '.join(MODES)}"
                    )
                length = _positive_int(length)
                if length is None:
                    raise DataError(
                        f"PackedLayout.from_splits: sample {i} split {j} length must be a positive int, got {item[0]!r}"
                    )
                splits.append(Split(offset, length, mode))
                offset += length
            built.append(splits)
        return cls(built)

    @classmethod
    def uniform(cls, lengths: Sequence[int], mode: str = "full") -> PackedLayout:
        """One split of ``mode`` per sample (e.g. one ``full`` split per image in the ViT)."""
        return cls.from_splits([[(int(n), mode)] for n in lengths])

    def __repr__(self) -> str:
        body = "; ".join(",".join(f"{s.length}{s.mode[0]}" for s in sample) for sample in self.samples)
        return f"PackedLayout(T={self.total_len}: {body})"

    def check_tokens(self, n: int, what: str = "q") -> None:
        """Raise DataError when a tensor's token count disagrees with the layout."""
        if n != self.total_len:
            raise DataError(
                f"packed attention: {what} has {n} tokens but the layout's split lengths sum to "
                f"{self.total_len} ({self!r}); the split lengths must add up to the packed sequence length"
            )

    # -- masks --------------------------------------------------------------------------------

    def sample_kind(self, i: int) -> str:
        """``causal``/``full`` when sample ``i`` is one such split (no mask needed), else ``mixed``."""
        splits = self.samples[i]
        if len(splits) == 1:
            return "causal" if splits[0].mode == "causal" else "full"
        return "mixed"

    @property
    def single_split_mode(self) -> str | None:
        """The shared mode when every sample is a single split of the same kind, else None."""
        kinds = {self.sample_kind(i) for i in range(len(self.samples))}
        return kinds.pop() if len(kinds) == 1 and "mixed" not in kinds else None

    def sample_mask(self, i: int, device: torch.device | str = "cpu") -> Tensor:
        """Boolean mask of sample ``i``: (L, L), True where query row may attend to key column."""
        key = ("sample", i, str(device))
        if key not in self._cache:
            splits = self.samples[i]
            split_id = torch.cat([torch.full((s.length,), j, dtype=torch.long) for j, s in enumerate(splits)])
            mode = torch.tensor([_MODE_CODE[s.mode] for s in splits])[split_id]
            pos = torch.arange(self.sample_lens[i])
            self._cache[key] = _mask_from_tokens(split_id, mode, pos, split_id, mode, pos).to(device)
        return self._cache[key]  # type: ignore[return-value]

    def dense_mask(self, device: torch.device | str = "cpu") -> Tensor:
        """The whole (T, T) boolean mask. For tests and small inputs only: memory is T^2."""
        mask = torch.zeros(self.total_len, self.total_len, dtype=torch.bool, device=device)
        for i, (start, n) in enumerate(zip(self.sample_starts, self.sample_lens)):
            mask[start : start + n, start : start + n] = self.sample_mask(i, device)
        return mask

    def token_tensors(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Per-token (doc_id, split_id, mode_code), each (T,) long; split ids are global and ordered."""
        key = ("tokens", str(device))
        if key not in self._cache:
            doc, split, mode = [], [], []
            g = 0
            for d, sample in enumerate(self.samples):
                for s in sample:
                    doc.append(torch.full((s.length,), d, dtype=torch.long))
                    split.append(torch.full((s.length,), g, dtype=torch.long))
                    mode.append(torch.full((s.length,), _MODE_CODE[s.mode], dtype=torch.long))
                    g += 1
            self._cache[key] = tuple(torch.cat(t).to(device) for t in (doc, split, mode))
        return self._cache[key]  # type: ignore[return-value]

    def block_mask(self, device: torch.device | str, compiled: bool):
        """The flex-attention BlockMask of this layout (built once per device)."""
        key = ("block", str(device), compiled)
        if key not in self._cache:
            from torch.nn.attention.flex_attention import create_block_mask

            doc, split, mode = self.token_tensors(device)

            def mask_mod(b, h, q_idx, kv_idx):
                same_doc = doc[q_idx] == doc[kv_idx]
                earlier = (split[kv_idx] < split[q_idx]) & (mode[kv_idx] != _NOISE)
                same = (split[kv_idx] == split[q_idx]) & ((mode[q_idx] != _CAUSAL) | (kv_idx <= q_idx))
                return same_doc & (earlier | same)

            T = self.total_len
            self._cache[key] = create_block_mask(mask_mod, None, None, T, T, device=device, _compile=compiled)
        return self._cache[key]


def _positive_int(value: object) -> int | None:
    """``value`` as an int when it is a positive integer of any type (numpy, 0-d tensor), else None."""
    if isinstance(value, bool):
        return None
    try:
        n = operator.index(value)
    except TypeError:
        return None
    return n if n > 0 else None


def _mask_from_tokens(
    q_split: Tensor, q_mode: Tensor, q_pos: Tensor, k_split: Tensor, k_mode: Tensor, k_pos: Tensor
) -> Tensor:
    """Mask (Lq, Lk) for tokens of ONE sample, from per-token split ids, mode codes and positions."""
    qs, qm, qp = q_split[:, None], q_mode[:, None], q_pos[:, None]
    ks, km, kp = k_split[None, :], k_mode[None, :], k_pos[None, :]
    earlier = (ks < qs) & (km != _NOISE)  # earlier splits are visible unless they are noise
    same = (ks == qs) & ((qm != _CAUSAL) | (kp <= qp))  # inside a split: causal or bidirectional
    return earlier | same


# ---------------------------------------------------------------------------------------------
# Backends.


def _sdpa(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, scale: float | None) -> Tensor:
    """Per-sample SDPA; q: (T, Hq, D), k/v: (T, Hkv, D) -> (T, Hq, D)."""
    gqa = q.shape[1] != k.shape[1]
    mode = layout.single_split_mode
    if mode is not None and len(set(layout.sample_lens)) == 1:
        # Equal-length samples, each one causal or full split: one batched call, no mask.
        B, L = len(layout.samples), layout.sample_lens[0]
        qb, kb, vb = (x.view(B, L, x.shape[1], x.shape[2]).transpose(1, 2) for x in (q, k, v))  # (B, H, L, D)
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=mode == "causal", scale=scale, enable_gqa=gqa)
        return o.transpose(1, 2).reshape(q.shape)
    if len(layout.samples) == 1:
        chunks = [(0, layout.total_len, 0)]
    else:
        chunks = [(s, n, i) for i, (s, n) in enumerate(zip(layout.sample_starts, layout.sample_lens))]
    outs = []
    for start, n, i in chunks:
        # (L, H, D) -> (1, H, L, D): heads before the sequence, and 4-D because SDPA's fused
        # CPU kernels only take batched inputs (3-D falls back to the slow math path, ~5x).
        qs = q[start : start + n].transpose(0, 1)[None]
        ks = k[start : start + n].transpose(0, 1)[None]
        vs = v[start : start + n].transpose(0, 1)[None]
        kind = layout.sample_kind(i)
        if kind == "mixed":
            mask = layout.sample_mask(i, q.device)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale, enable_gqa=gqa)
        else:
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=kind == "causal", scale=scale, enable_gqa=gqa)
        outs.append(o[0].transpose(0, 1))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


@functools.cache
def _compiled_flex():
    # Compiled lazily on first use (never at import time).
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, scale: float | None, compiled: bool) -> Tensor:
    """flex_attention over the whole pack with a BlockMask; q: (T, Hq, D) -> (T, Hq, D)."""
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = layout.block_mask(q.device, compiled)
    fn = _compiled_flex() if compiled else flex_attention
    # (T, H, D) -> (1, H, T, D)
    if not torch.is_grad_enabled():
        # Flex refuses inputs that require grad on CPU even under no_grad; nothing is recorded anyway.
        q, k, v = q.detach(), k.detach(), v.detach()
    qb, kb, vb = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    with warnings.catch_warnings():
        # Eager flex warns that it materialises the scores; that is intended for CPU checks.
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        out = fn(qb, kb, vb, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out.squeeze(0).transpose(0, 1)


@functools.cache
def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func  # optional CUDA package
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return flash_attn_varlen_func


def flash_available() -> bool:
    """True when the optional flash-attn package imports (it only runs on CUDA)."""
    return _flash_varlen() is not None


def _flash(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, scale: float | None) -> Tensor:
    """flash-attn varlen over samples that are single splits of one shared mode."""
    fn = _flash_varlen()
    lens = torch.tensor([0] + layout.sample_lens, device=q.device, dtype=torch.int32)
    cu = torch.cumsum(lens, 0, dtype=torch.int32)
    m = max(layout.sample_lens)
    causal = layout.single_split_mode == "causal"
    return fn(q, k, v, cu, cu, m, m, softmax_scale=scale, causal=causal)


def _flash_supports(q: Tensor, layout: PackedLayout) -> bool:
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and flash_available()
        and layout.single_split_mode is not None
    )


def _flex_supports(q: Tensor, k: Tensor, v: Tensor) -> bool:
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    return q.is_cuda or not needs_grad


def resolve_backend(backend: str, q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> str:
    """The concrete backend ``packed_attention`` will use for this call."""
    if backend not in BACKENDS:
        raise ConfigError(f"attention backend {backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if _flash_supports(q, layout):
        return "flash"
    # Layouts whose samples are all single causal/full splits run on SDPA's fused kernels without
    # masks; on CUDA a compiled flex kernel beats masked SDPA for the mixed layouts.
    if q.is_cuda and layout.single_split_mode is None and _flex_supports(q, k, v):
        return "flex"
    return "sdpa"


def packed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    layout: PackedLayout,
    backend: str = "auto",
    scale: float | None = None,
    *,
    flex_compile: bool | None = None,
) -> Tensor:
    """Attention over a packed sequence; q: (T, Hq, D), k/v: (T, Hkv, D) -> (T, Hq, D).

    ``Hkv`` must divide ``Hq`` (grouped-query attention). ``scale`` defaults to 1/sqrt(D).
    ``flex_compile`` forces the flex kernel compiled (True) or eager (False); by default it is
    compiled on CUDA and eager on CPU.
    """
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise DataError(
            f"packed attention: q, k, v must be (T, heads, head_dim); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    layout.check_tokens(q.shape[0], "q")
    layout.check_tokens(k.shape[0], "k")
    if k.shape != v.shape or q.shape[2] != k.shape[2] or q.shape[1] % k.shape[1] != 0:
        raise DataError(
            f"packed attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not "
            "fit: k and v must match, head_dim must agree, and k's head count must divide q's"
        )
    name = resolve_backend(backend, q, k, v, layout)
    if name == "sdpa":
        return _sdpa(q, k, v, layout, scale)
    if name == "flex":
        if not _flex_supports(q, k, v):
            raise ConfigError(
                "attention backend 'flex' has no backward pass on CPU; use backend 'sdpa' (or 'auto') "
                "for training on CPU, or run flex under torch.no_grad()"
            )
        return _flex(q, k, v, layout, scale, compiled=q.is_cuda if flex_compile is None else flex_compile)
    if not _flash_supports(q, layout):
        raise ConfigError(
            "attention backend 'flash' needs the flash-attn package, a CUDA tensor in fp16/bf16, and a "
            "layout where every sample is one split of one shared mode; use backend 'auto' instead"
        )
    return _flash(q, k, v, layout, scale)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, scale: float | None = None) -> Tensor:
    """Plain softmax attention with the dense (T, T) mask: the readable definition, for tests."""
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.einsum("qhd,khd->hqk", q, k) * scale
    scores = scores.masked_fill(~layout.dense_mask(q.device), float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
