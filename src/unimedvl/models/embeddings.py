"""Small embedding pieces shared by the unified model: timesteps, 2-D positions, patches, connector.

Everything here is defined by a formula in spec/unified-model.md (sections 1 and 3) so that released
weights line up: the timestep features, the frozen sin-cos position tables, the flat position ids of
an image inside a square table, and the pixel/latent patch orders.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from unimedvl.config import ACTIVATIONS
from unimedvl.errors import ConfigError, DataError

__all__ = [
    "MLPconnector",
    "PositionEmbedding",
    "TimestepEmbedder",
    "activation",
    "grid_position_ids",
    "latent_position_ids",
    "patchify",
    "patchify_latent",
    "sincos_2d_table",
    "timestep_embedding",
    "unpatchify",
    "unpatchify_latent",
]


def activation(name: str) -> nn.Module:
    """The activation module for a config name (gelu_pytorch_tanh | gelu | silu)."""
    if name == "gelu_pytorch_tanh":
        return nn.GELU(approximate="tanh")
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


# ---------------------------------------------------------------------------------------------
# Timesteps.


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of flow times ``t`` (N,) -> (N, dim), order [cos, sin] (DiT convention).

    ``t`` lies in [0, 1] and is used as is (no x1000 scaling), as in the release.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:  # odd widths get one zero column so the output is exactly `dim` wide
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Flow time t -> hidden vector: sinusoidal features, then Linear -> SiLU -> Linear (``mlp.0``, ``mlp.2``)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        # t: (N,) -> (N, hidden)
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------
# Frozen 2-D sin-cos position tables.


def _sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """E_dim(p) = concat(sin(p*w), cos(p*w)), w_i = 1/10000^(i/(dim/2)), i < dim/2; (P,) -> (P, dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.double()[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d_table(side: int, dim: int) -> Tensor:
    """The [side*side, dim] table whose row r*side+c is concat(E_{dim/2}(c), E_{dim/2}(r)).

    Computed in float64 and returned as float32, so the released tables are reproduced to fp32
    precision for any ``side`` (the tables are recomputed, never trained).
    """
    if dim % 4:
        raise ConfigError(f"a 2-D sin-cos table needs a width divisible by 4, got {dim}: change hidden_size")
    coords = torch.arange(side, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (side, side) each
    emb_col = _sincos_1d(cols.reshape(-1), dim // 2)
    emb_row = _sincos_1d(rows.reshape(-1), dim // 2)
    return torch.cat([emb_col, emb_row], dim=1).float()


class PositionEmbedding(nn.Module):
    """A frozen 2-D sin-cos table ``pos_embed`` [side^2, hidden] looked up by flat position ids.

    The table is a persistent buffer (checkpoint key ``<name>.pos_embed``), recomputed from the
    formula at construction and by ``reset_parameters``. Loading is lenient because the table is
    recomputable: a checkpoint without it, or with a table of another size (``max_side`` changed),
    keeps the computed one; a table of the same shape is loaded.
    """

    def __init__(self, max_num_patch_per_side: int, hidden_size: int) -> None:
        super().__init__()
        self.max_num_patch_per_side = max_num_patch_per_side
        self.hidden_size = hidden_size
        self.register_buffer("pos_embed", sincos_2d_table(max_num_patch_per_side, hidden_size), persistent=True)

    def reset_parameters(self) -> None:
        """Recompute the table (after ``to_empty`` from the meta device)."""
        table = sincos_2d_table(self.max_num_patch_per_side, self.hidden_size)
        with torch.no_grad():
            self.pos_embed.copy_(table.to(self.pos_embed.device, self.pos_embed.dtype))

    def forward(self, position_ids: Tensor) -> Tensor:
        # position_ids: (N,) flat ids row*side+col -> (N, hidden)
        return self.pos_embed[position_ids]

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        key = prefix + "pos_embed"
        value = state_dict.get(key)
        if value is not None and value.shape == self.pos_embed.shape:
            super()._load_from_state_dict(
                state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
            )
            return
        # Absent or another size: keep the computed table. Hide the key from the default loader
        # so strict loading neither reports it missing nor fails on the shape.
        local = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(local, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        missing_keys[:] = [k for k in missing_keys if k != key]


# ---------------------------------------------------------------------------------------------
# Flat position ids of an image inside a square table.


def grid_position_ids(height: int, width: int, max_side: int, interpolate: bool = False) -> Tensor:
    """Flat ids (height*width,) of a height x width grid of patches in a max_side x max_side table.

    - extrapolate (default): id = row*max_side + col; the grid must fit in the table.
    - interpolate: fractional coordinates ``arange(0, 1-1e-6, 1/n)`` of each axis are bucketed
      into the table with boundaries ``arange(1/max_side, 1, 1/max_side)`` (``bucketize`` with
      right=True), so any grid size maps onto the whole table.
    Callers that know the unit (pixels, latent cells) check the size first with a better message.
    """
    if height < 1 or width < 1:
        raise DataError(f"an image grid needs at least one patch per side, got {height} x {width}")
    if interpolate:
        # float32 like the reference, so bucket edges fall exactly where the released model saw them
        boundaries = torch.arange(1 / max_side, 1.0, 1 / max_side, dtype=torch.float32)
        rows = torch.bucketize(torch.arange(0, 1 - 1e-6, 1 / height, dtype=torch.float32), boundaries, right=True)
        cols = torch.bucketize(torch.arange(0, 1 - 1e-6, 1 / width, dtype=torch.float32), boundaries, right=True)
    else:
        if height > max_side or width > max_side:
            raise DataError(
                f"an image of {height} x {width} patches does not fit the {max_side} x {max_side} position "
                f"table: resize the image or raise the table size"
            )
        rows = torch.arange(height)
        cols = torch.arange(width)
    return (rows[:, None] * max_side + cols[None, :]).reshape(-1)


def latent_position_ids(height: int, width: int, max_latent_size: int, interpolate: bool = False) -> Tensor:
    """Flat ids of a latent grid of height x width tokens (latent patches) in the latent table."""
    if not interpolate and (height > max_latent_size or width > max_latent_size):
        raise DataError(
            f"a latent of {height} x {width} tokens exceeds max_latent_size={max_latent_size} tokens per side "
            f"(each token is 16 pixels in the release layout): resize the image so each side is at most "
            f"{max_latent_size} tokens, or raise max_latent_size in the model config"
        )
    return grid_position_ids(height, width, max_latent_size, interpolate)


# ---------------------------------------------------------------------------------------------
# Patch order: pixels and latents share the (p, q, c) order inside one patch.


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """[..., C, H, W] -> [..., (H/p)*(W/p), p*p*C], patches row-major, values in (p, q, c) order."""
    height, width = x.shape[-2:]
    if height % patch_size or width % patch_size:
        raise DataError(
            f"a {height} x {width} input is not divisible by the patch size {patch_size}: "
            f"resize or crop it to a multiple of {patch_size}"
        )
    return rearrange(x, "... c (h p) (w q) -> ... (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(tokens: Tensor, height: int, width: int, patch_size: int, channels: int) -> Tensor:
    """Inverse of ``patchify``: [..., h*w, p*p*C] -> [..., C, h*p, w*p] for a grid of h x w patches."""
    if tokens.shape[-2] != height * width or tokens.shape[-1] != patch_size * patch_size * channels:
        raise DataError(
            f"cannot unpatchify tokens of shape {tuple(tokens.shape)} into a {height} x {width} grid of "
            f"{patch_size}x{patch_size}x{channels} patches"
        )
    return rearrange(
        tokens, "... (h w) (p q c) -> ... c (h p) (w q)", h=height, w=width, p=patch_size, q=patch_size, c=channels
    )


def patchify_latent(latent: Tensor, patch_size: int = 2) -> Tensor:
    """VAE latent [..., z, 2h, 2w] -> tokens [..., h*w, 2*2*z] (the LLM's view of a latent image)."""
    return patchify(latent, patch_size)


def unpatchify_latent(tokens: Tensor, height: int, width: int, patch_size: int = 2, z_channels: int = 16) -> Tensor:
    """Tokens [..., h*w, 2*2*z] -> VAE latent [..., z, 2h, 2w] for a grid of h x w tokens."""
    return unpatchify(tokens, height, width, patch_size, z_channels)


# ---------------------------------------------------------------------------------------------
# ViT -> LLM connector.


class MLPconnector(nn.Module):
    """Maps vision features into the language model width: fc1 -> activation -> fc2."""

    def __init__(self, in_dim: int, out_dim: int, hidden_act: str = "gelu_pytorch_tanh") -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = activation(hidden_act)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: (N, in_dim) -> (N, out_dim)
        return self.fc2(self.act(self.fc1(x)))
