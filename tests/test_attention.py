"""Packed attention: mask semantics, backend agreement, memory behaviour, errors."""

import time

import pytest
import torch

from unimedvl.errors import ConfigError, DataError
from unimedvl.models.attention import PackedLayout, packed_attention, reference_attention

MIXED = [
    [(5, "causal"), (4, "noise"), (6, "full"), (3, "causal")],
    [(7, "full")],
    [(6, "causal")],
    [(3, "causal"), (3, "noise"), (2, "noise"), (4, "causal")],
]


def qkv(T, hq=4, hkv=2, d=8, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(T, h, d, generator=g) for h in (hq, hkv, hkv))
    return [x.requires_grad_(grad) for x in (q, k, v)]


def test_mask_semantics_small_example():
    layout = PackedLayout.from_splits([[(2, "causal"), (2, "noise"), (1, "full")], [(2, "full")]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],  # noise: bidirectional inside, sees the earlier split
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],  # after noise: does not see it
            [0, 0, 0, 0, 0, 1, 1],  # second sample: full, isolated
            [0, 0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(layout.dense_mask(), expected)
    assert layout.total_len == 7 and layout.sample_lens == [5, 2]


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)])
def test_backends_agree_with_reference(hq, hkv):
    layout = PackedLayout.from_splits(MIXED)
    q, k, v = qkv(layout.total_len, hq, hkv)
    ref = reference_attention(q, k, v, layout)
    for backend in ("sdpa", "flex", "auto"):
        out = packed_attention(q, k, v, layout, backend)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0, msg=backend)


@pytest.mark.parametrize("lengths", [[9, 4, 12], [6, 6, 6]])
@pytest.mark.parametrize("mode", ["causal", "full"])
def test_single_split_fast_paths_agree(mode, lengths):
    # Every sample is one split: SDPA runs without masks (is_causal / no mask), batched when
    # the samples have equal lengths.
    layout = PackedLayout.uniform(lengths, mode)
    q, k, v = qkv(layout.total_len)
    ref = reference_attention(q, k, v, layout, scale=0.3)
    torch.testing.assert_close(packed_attention(q, k, v, layout, "sdpa", scale=0.3), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed_attention(q, k, v, layout, "flex", scale=0.3), ref, atol=1e-5, rtol=0)


def test_sdpa_backward_matches_reference():
    layout = PackedLayout.from_splits(MIXED)
    grads = []
    for fn in (lambda *a: packed_attention(*a, backend="sdpa"), reference_attention):
        q, k, v = qkv(layout.total_len, grad=True)
        (fn(q, k, v, layout) * torch.linspace(-1, 1, 8)).sum().backward()
        grads.append([x.grad for x in (q, k, v)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def _changed_rows(layout, perturb_rows):
    q, k, v = qkv(layout.total_len)
    base = packed_attention(q, k, v, layout, "sdpa")
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[perturb_rows] += 1.0
    out = packed_attention(q2, k2, v2, layout, "sdpa")
    return (out - base).abs().amax(dim=(1, 2)) > 1e-6  # (T,) which outputs changed


def test_noise_split_is_invisible_to_later_splits():
    layout = PackedLayout.from_splits([[(3, "causal"), (4, "noise"), (3, "full"), (2, "causal")]])
    changed = _changed_rows(layout, [4])  # a token inside the noise split
    assert changed[3:7].all()  # the noise split itself (bidirectional) changes
    assert not changed[:3].any() and not changed[7:].any()


def test_samples_are_isolated():
    layout = PackedLayout.from_splits(MIXED)
    changed = _changed_rows(layout, [20])  # inside sample 1 (tokens 18..24)
    assert changed[18:25].all()
    assert not changed[:18].any() and not changed[25:].any()


def test_full_split_sees_its_future_and_causal_does_not():
    layout = PackedLayout.from_splits([[(3, "causal"), (4, "full")]])
    assert _changed_rows(layout, [6])[3:7].all()  # last token of the full split reaches its first
    changed = _changed_rows(layout, [1])
    assert not changed[0] and changed[1:].all()  # causal split: the past never sees the future


def test_sdpa_memory_is_per_sample():
    # 16 samples x 512 tokens: a dense (T, T) mask would have 67M entries; per-sample masks 262k each.
    lens = [512] * 16
    layout = PackedLayout.from_splits([[(200, "causal"), (100, "noise"), (212, "full")] for _ in lens])
    q, k, v = qkv(layout.total_len, hq=2, hkv=1, d=8)
    start = time.perf_counter()
    out = packed_attention(q, k, v, layout, "sdpa")
    assert out.shape == q.shape and torch.isfinite(out).all()
    built = [t for t in layout._cache.values() if isinstance(t, torch.Tensor)]
    assert built and max(t.numel() for t in built) <= 512 * 512
    assert time.perf_counter() - start < 20


def test_bad_layouts_raise_clear_errors():
    with pytest.raises(DataError, match="unknown mode 'bidirectional'"):
        PackedLayout.from_splits([[(3, "bidirectional")]])
    with pytest.raises(DataError, match="length must be a positive int"):
        PackedLayout.from_splits([[(0, "causal")]])
    with pytest.raises(DataError, match="sample 0 has no splits"):
        PackedLayout.from_splits([[]])
    layout = PackedLayout.from_splits([[(3, "causal"), (2, "full")]])
    q, k, v = qkv(6)
    with pytest.raises(DataError, match="split lengths sum to 5"):
        packed_attention(q, k, v, layout)
    q, k, v = qkv(5, hq=3, hkv=2)
    with pytest.raises(DataError, match="head count must divide"):
        packed_attention(q, k, v, layout)


def test_backend_errors():
    layout = PackedLayout.from_splits([[(3, "causal")]])
    q, k, v = qkv(3)
    with pytest.raises(ConfigError, match="backend 'fast' is unknown"):
        packed_attention(q, k, v, layout, "fast")
    q, k, v = qkv(3, grad=True)
    with pytest.raises(ConfigError, match="no backward pass on CPU"):
        packed_attention(q, k, v, layout, "flex")
    with torch.no_grad():  # without grad flex is allowed on CPU
        packed_attention(q, k, v, layout, "flex")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="flash"):
            packed_attention(q, k, v, layout, "flash")


@pytest.mark.slow
def test_compiled_flex_matches_sdpa():
    layout = PackedLayout.from_splits(MIXED)
    q, k, v = qkv(layout.total_len)
    out = packed_attention(q, k, v, layout, "flex", flex_compile=True)
    torch.testing.assert_close(out, packed_attention(q, k, v, layout, "sdpa"), atol=1e-5, rtol=0)
