"""Embedding formulas (timesteps, sin-cos tables), position ids, patch order, connector."""

import math

import pytest
import torch
from torch import nn

from unimedvl.errors import ConfigError, DataError
from unimedvl.models.embeddings import (
    MLPconnector,
    PositionEmbedding,
    TimestepEmbedder,
    grid_position_ids,
    latent_position_ids,
    patchify_latent,
    sincos_2d_table,
    timestep_embedding,
    unpatchify_latent,
)


def _table_by_formula(side: int, dim: int) -> torch.Tensor:
    """The spec formula written out with Python floats, one entry at a time."""
    half = dim // 2

    def e(p: float) -> list[float]:
        w = [1.0 / 10000 ** (i / (half / 2)) for i in range(half // 2)]
        return [math.sin(p * wi) for wi in w] + [math.cos(p * wi) for wi in w]

    rows = []
    for r in range(side):
        for c in range(side):
            rows.append(e(c) + e(r))  # flat index r*side+c: concat(E(col), E(row))
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("side,dim", [(5, 16), (7, 24)])
def test_sincos_table_matches_formula(side, dim):
    got = sincos_2d_table(side, dim)
    assert got.shape == (side * side, dim) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), _table_by_formula(side, dim), atol=1e-6, rtol=0)


def test_sincos_table_rejects_width_not_divisible_by_4():
    with pytest.raises(ConfigError, match="divisible by 4"):
        sincos_2d_table(4, 18)


def test_timestep_embedding_matches_formula_cos_then_sin():
    t = torch.tensor([0.0, 0.25, 1.0])
    got = timestep_embedding(t, dim=8, max_period=10000)
    expected = []
    for ti in t.tolist():
        freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
        expected.append([math.cos(ti * f) for f in freqs] + [math.sin(ti * f) for f in freqs])
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-6, rtol=0)
    assert timestep_embedding(t, dim=256).shape == (3, 256)
    assert timestep_embedding(t, dim=7).shape == (3, 7)


def test_timestep_embedder_names_and_shape():
    emb = TimestepEmbedder(32)
    assert sorted(emb.state_dict()) == ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]
    assert emb.mlp[0].in_features == 256
    out = emb(torch.rand(5))
    assert out.shape == (5, 32) and torch.isfinite(out).all()


def test_position_embedding_is_frozen_and_lookup():
    pe = PositionEmbedding(4, 16)
    assert list(pe.parameters()) == []  # never trained
    assert pe.pos_embed.shape == (16, 16)
    ids = torch.tensor([0, 5, 15])
    torch.testing.assert_close(pe(ids), sincos_2d_table(4, 16)[ids])


def test_position_embedding_loads_or_skips_the_table():
    pe = PositionEmbedding(4, 16)
    fresh = pe.pos_embed.clone()
    # Absent (a loader dropped it): strict loading still succeeds and keeps the computed table.
    assert pe.load_state_dict({}, strict=True).missing_keys == []
    torch.testing.assert_close(pe.pos_embed, fresh)
    # Another size (max_side changed since saving): skipped.
    pe.load_state_dict({"pos_embed": torch.zeros(9, 16)}, strict=True)
    torch.testing.assert_close(pe.pos_embed, fresh)
    # Same shape: loaded.
    pe.load_state_dict({"pos_embed": torch.ones(16, 16)}, strict=True)
    assert torch.equal(pe.pos_embed, torch.ones(16, 16))
    pe.reset_parameters()
    torch.testing.assert_close(pe.pos_embed, fresh)
    # Mounted under a parent, the checkpoint key is latent_pos_embed.pos_embed.
    parent = nn.Module()
    parent.latent_pos_embed = PositionEmbedding(4, 16)
    assert list(parent.state_dict()) == ["latent_pos_embed.pos_embed"]


def test_position_embedding_from_meta_device():
    with torch.device("meta"):
        pe = PositionEmbedding(3, 8)
    pe = pe.to_empty(device="cpu")
    pe.reset_parameters()
    torch.testing.assert_close(pe.pos_embed, sincos_2d_table(3, 8))


def test_extrapolate_position_ids():
    ids = grid_position_ids(2, 3, max_side=5)
    assert ids.tolist() == [0, 1, 2, 5, 6, 7]
    assert latent_position_ids(1, 2, max_latent_size=8).tolist() == [0, 1]


def test_interpolate_position_ids_by_hand():
    # max_side 4: boundaries 0.25, 0.5, 0.75; coords of n=2 are (0, 0.5) -> buckets (0, 2)
    assert grid_position_ids(2, 1, 4, interpolate=True).tolist() == [0, 2 * 4]
    # n=3: (0, 1/3, 2/3) -> (0, 1, 2); n=4 fills the table exactly
    assert grid_position_ids(1, 3, 4, interpolate=True).tolist() == [0, 1, 2]
    assert grid_position_ids(4, 4, 4, interpolate=True).tolist() == list(range(16))
    # larger than the table: neighbouring patches share buckets, no error
    assert grid_position_ids(1, 8, 4, interpolate=True).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_too_large_grid_raises_naming_limit_and_fix():
    with pytest.raises(DataError, match="max_latent_size=4"):
        latent_position_ids(5, 2, max_latent_size=4)
    with pytest.raises(DataError, match="resize"):
        grid_position_ids(3, 7, max_side=6)


def test_latent_patchify_order_and_round_trip():
    z, h, w = 16, 3, 2
    latent = torch.randn(z, 2 * h, 2 * w)
    tokens = patchify_latent(latent)
    assert tokens.shape == (h * w, 2 * 2 * z)
    # token (i, j), element (p, q, c) is latent[c, 2i+p, 2j+q]
    i, j, p, q, c = 2, 1, 1, 0, 5
    assert tokens[i * w + j, (p * 2 + q) * z + c] == latent[c, 2 * i + p, 2 * j + q]
    assert torch.equal(unpatchify_latent(tokens, h, w), latent)
    batched = torch.randn(2, z, 4, 4)
    assert torch.equal(unpatchify_latent(patchify_latent(batched), 2, 2), batched)


def test_latent_patchify_rejects_odd_sizes():
    with pytest.raises(DataError, match="divisible"):
        patchify_latent(torch.randn(16, 5, 4))
    with pytest.raises(DataError, match="unpatchify"):
        unpatchify_latent(torch.randn(6, 64), 2, 2)


@pytest.mark.parametrize("act,ref", [("gelu_pytorch_tanh", nn.GELU("tanh")), ("gelu", nn.GELU()), ("silu", nn.SiLU())])
def test_connector(act, ref):
    conn = MLPconnector(8, 16, act)
    assert sorted(conn.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    x = torch.randn(3, 8)
    torch.testing.assert_close(conn(x), conn.fc2(ref(conn.fc1(x))))


def test_connector_unknown_activation():
    with pytest.raises(ConfigError, match="relu"):
        MLPconnector(8, 16, "relu")
