"""The FLUX image autoencoder (frozen VAE of the generation path), with the release key names.

Image x in [-1, 1], (B, 3, H, W)  --encode-->  latent (B, z, H/8, W/8)  --decode-->  image.
The latent handed to the language model is ``(z - shift_factor) * scale_factor``; ``decode``
undoes that first. Module names follow ``ae.safetensors`` (spec/unified-model.md section 2);
``autoencoder_state_dict_from_diffusers`` / ``..._to_diffusers`` translate to and from a
diffusers ``AutoencoderKL`` built with the FLUX layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.config import VAEConfig
from unimedvl.errors import CheckpointError, DataError

__all__ = [
    "Autoencoder",
    "autoencoder_state_dict_from_diffusers",
    "autoencoder_state_dict_to_diffusers",
    "tiled_apply",
    "vae_config_from_diffusers",
]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv3x3, twice, plus a (1x1-projected when widths differ) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels of a feature map (1x1 convs for q, k, v, out)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one head whose width is the channel count
        q, k, v = (proj(h).reshape(b, 1, c, height * width).transpose(-1, -2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve the resolution: zero-pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        # The asymmetric pad keeps the released weights' alignment (a symmetric pad shifts by half a pixel).
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """Resnet -> attention -> resnet at the lowest resolution (``block_1``, ``attn_1``, ``block_2``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: ``block`` (resnets), then ``downsample`` (encoder) or ``upsample`` (decoder) if any."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.downsample: Downsample | None = None
        self.upsample: Upsample | None = None


class Encoder(nn.Module):
    """Image (B, C, H, W) -> moments (B, 2*z, H/2^(L-1), W/2^(L-1)): mean and log-variance."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for level, block_out in enumerate(widths):
            stage = _Level()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            if level != len(widths) - 1:
                stage.downsample = Downsample(block_in)
            self.down.append(stage)
        self.mid = MidBlock(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if stage.downsample is not None:
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent z (B, z, h, w) -> image (B, C, h*2^(L-1), w*2^(L-1)); ``up.0`` is the highest resolution and runs last."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        block_in = widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = MidBlock(block_in)
        levels: list[_Level] = []
        for level in reversed(range(len(widths))):
            stage = _Level()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, widths[level]))
                block_in = widths[level]
            if level != 0:
                stage.upsample = Upsample(block_in)
            levels.insert(0, stage)  # keep up[i] indexed by resolution level, as in the checkpoint
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if stage.upsample is not None:
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """FLUX VAE: ``encode`` images to scaled latents, ``decode`` scaled latents to images.

    Frozen in unified training; images are in [-1, 1]. Memory for large inputs is bounded by
    ``batch_chunk`` (images per forward) and, for decoding, optional overlapping tiles.
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along one side."""
        return self.config.downsample

    def _check_image(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise DataError(f"VAE encode expects images (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.downsample or width % self.downsample:
            raise DataError(
                f"VAE encode needs image sides divisible by {self.downsample}, got {height} x {width}: "
                f"resize to a multiple of {self.downsample} (the image transforms round to 16)"
            )

    def encode(
        self, x: Tensor, sample: bool = False, batch_chunk: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] -> scaled latents (B, z, H/8, W/8).

        Returns the posterior mean (deterministic) unless ``sample=True`` (a training option that
        draws mean + std * noise). ``batch_chunk`` encodes that many images at a time.
        """
        self._check_image(x)
        x = x.to(self.encoder.conv_in.weight.dtype)
        moments = _chunked(self.encoder, x, batch_chunk)
        mean, logvar = moments.chunk(2, dim=1)
        z = mean
        if sample:
            # same clamp as the usual diagonal-Gaussian posterior, so exp() cannot overflow
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + std * noise
        return (z - self.config.shift_factor) * self.config.scale_factor

    def decode(
        self, latent: Tensor, batch_chunk: int | None = None, tile_size: int | None = None, tile_overlap: int = 8
    ) -> Tensor:
        """Scaled latents (B, z, h, w) -> images (B, C, 8h, 8w), roughly in [-1, 1].

        ``batch_chunk`` decodes that many latents at a time. ``tile_size`` (in latent cells)
        decodes overlapping tiles of that size and blends them linearly across ``tile_overlap``
        cells, bounding memory for very large images; the result differs slightly from a
        whole-image decode (GroupNorm statistics and attention become per tile).
        """
        if latent.ndim != 4 or latent.shape[1] != self.config.z_channels:
            raise DataError(
                f"VAE decode expects latents (B, {self.config.z_channels}, h, w), got {tuple(latent.shape)}"
            )
        z = latent.to(self.decoder.conv_in.weight.dtype) / self.config.scale_factor + self.config.shift_factor

        def run(chunk: Tensor) -> Tensor:
            return _chunked(self.decoder, chunk, batch_chunk)

        if tile_size is not None and max(z.shape[-2:]) > tile_size:
            return tiled_apply(run, z, tile_size, tile_overlap, self.downsample)
        return run(z)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction (encode the mean, then decode)."""
        return self.decode(self.encode(x))

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | Path, config: VAEConfig | None = None, map_location: str | torch.device = "cpu"
    ) -> Autoencoder:
        """Load ``ae.safetensors`` (release keys), a directory holding it, or a diffusers AutoencoderKL directory.

        For ``ae.safetensors`` the architecture comes from ``config`` (default: the release
        layout); a diffusers directory carries its own ``config.json``.
        """
        from safetensors.torch import load_file

        path = Path(path)
        if path.is_dir() and (path / "ae.safetensors").is_file():
            path = path / "ae.safetensors"
        if path.is_file():
            state = load_file(str(path), device=str(map_location))
            if any(k.startswith("encoder.down_blocks.") for k in state):  # a lone diffusers file
                state = autoencoder_state_dict_from_diffusers(state)
            source = str(path)
        elif path.is_dir() and (path / "config.json").is_file():
            diffusers_config = json.loads((path / "config.json").read_text())
            config = vae_config_from_diffusers(diffusers_config, source=str(path / "config.json"))
            state = autoencoder_state_dict_from_diffusers(
                _load_weight_files(path, "diffusion_pytorch_model.safetensors", map_location)
            )
            source = str(path)
        else:
            raise CheckpointError(
                f"{path}: not a VAE checkpoint; pass ae.safetensors, a directory holding it, or a "
                f"diffusers AutoencoderKL directory (config.json + diffusion_pytorch_model.safetensors)"
            )
        model = cls(config)
        _load_strict(model, state, source)
        return model


def _load_weight_files(path: Path, preferred: str, map_location: str | torch.device) -> dict[str, Tensor]:
    """Weights of a directory: ``preferred`` when present (ignores e.g. fp16 variants), else every *.safetensors."""
    from safetensors.torch import load_file

    files = [path / preferred] if (path / preferred).is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors weights beside config.json")
    state: dict[str, Tensor] = {}
    for file in files:
        state.update(load_file(str(file), device=str(map_location)))
    return state


def _chunked(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int | None) -> Tensor:
    """Apply ``fn`` to ``x`` in batch chunks of ``chunk`` items (all at once when None)."""
    if chunk is None or x.shape[0] <= chunk:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(chunk)], dim=0)


def _blend_ramp(length: int, overlap: int, at_start: bool, at_end: bool, device, dtype) -> Tensor:
    """Weights (length,) rising linearly over ``overlap`` at a shared start and falling at a shared end."""
    w = torch.ones(length, device=device, dtype=dtype)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device, dtype=dtype) + 0.5) / overlap
        if at_start:
            w[:overlap] = ramp
        if at_end:
            w[-overlap:] = ramp.flip(0)
    return w


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # last tile flush with the edge
    return starts


def tiled_apply(fn: Callable[[Tensor], Tensor], z: Tensor, tile: int, overlap: int, scale: int) -> Tensor:
    """Apply a spatially upscaling ``fn`` ((B, C, h, w) -> (B, C', h*scale, w*scale)) tile by tile.

    Tiles of ``tile`` x ``tile`` cells overlap by ``overlap`` cells; outputs are blended with linear
    ramps over the overlaps and normalised by the summed weights, so a purely local ``fn`` gives
    exactly its whole-image result.
    """
    if not 0 <= overlap < tile:
        raise DataError(f"tile_overlap={overlap} must be in [0, tile_size={tile})")
    height, width = z.shape[-2:]
    out = None
    weight = None
    rows, cols = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
    for r in rows:
        for c in cols:
            piece = fn(z[..., r : r + tile, c : c + tile])
            th, tw = piece.shape[-2:]
            if out is None:
                out = piece.new_zeros(*piece.shape[:-2], height * scale, width * scale)
                weight = piece.new_zeros(height * scale, width * scale)
            # Ramps only where this tile actually overlaps a neighbour (the overlap may be larger
            # than nominal for the last, edge-flush tile; the nominal ramp still sums correctly
            # after normalisation by the accumulated weights).
            wr = _blend_ramp(th, overlap * scale, r > 0, r != rows[-1], piece.device, piece.dtype)
            wc = _blend_ramp(tw, overlap * scale, c > 0, c != cols[-1], piece.device, piece.dtype)
            w2 = wr[:, None] * wc[None, :]
            out[..., r * scale : r * scale + th, c * scale : c * scale + tw] += piece * w2
            weight[r * scale : r * scale + th, c * scale : c * scale + tw] += w2
    return out / weight


def _load_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load all weights or raise CheckpointError naming the missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:4])}")
        if bad_shape:
            parts.append(f"shape mismatch (checkpoint vs model): {'; '.join(bad_shape[:4])}")
        raise CheckpointError(
            f"{source}: does not match the autoencoder config ({'; '.join(parts)}); check vae.ch, "
            f"vae.ch_mult, vae.num_res_blocks and vae.z_channels"
        )
    model.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------------------------------------
# diffusers <-> release key names.

_ATTN_ALIASES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ATTN_OURS_TO_DIFFUSERS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_DIFFUSERS_TO_OURS = {v: k for k, v in _ATTN_OURS_TO_DIFFUSERS.items()}


def vae_config_from_diffusers(config: Mapping, source: str = "config.json") -> VAEConfig:
    """A VAEConfig from a diffusers AutoencoderKL config; non-FLUX layouts raise CheckpointError."""
    if config.get("use_quant_conv", True) or config.get("use_post_quant_conv", True):
        raise CheckpointError(
            f"{source}: use_quant_conv / use_post_quant_conv are set; the FLUX layout has neither "
            f"(this looks like a Stable Diffusion VAE, which this model does not use)"
        )
    if not config.get("mid_block_add_attention", True):
        raise CheckpointError(f"{source}: mid_block_add_attention=false; the FLUX layout has mid-block attention")
    widths = list(config.get("block_out_channels", (64,)))
    ch = widths[0]
    if any(w % ch for w in widths):
        raise CheckpointError(f"{source}: block_out_channels {widths} are not multiples of the first width")
    return VAEConfig(
        in_channels=config.get("in_channels", 3),
        out_ch=config.get("out_channels", 3),
        ch=ch,
        ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=config.get("layers_per_block", 1),
        z_channels=config.get("latent_channels", 4),
        scale_factor=float(config.get("scaling_factor", 0.18215)),
        shift_factor=float(config.get("shift_factor") or 0.0),
    )


def _diffusers_key_to_ours(key: str, num_levels: int) -> str:
    """One diffusers AutoencoderKL key -> the release key (see module doc)."""
    part, rest = key.split(".", 1)  # encoder | decoder
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        kind, idx, sub, j, tail = m.groups()
        level = int(idx) if kind == "down" else num_levels - 1 - int(idx)  # diffusers up_blocks run low-res first
        tail = tail.replace("conv_shortcut", "nin_shortcut")
        if sub == "resnets":
            return f"{part}.{kind}.{level}.block.{j}.{tail}"
        return f"{part}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.{tail}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
    if m:
        sub, j, tail = m.groups()
        if sub == "resnets":
            return f"{part}.mid.block_{int(j) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        name, param = tail.rsplit(".", 1)
        name = _ATTN_ALIASES.get(name, name)
        return f"{part}.mid.attn_1.{_ATTN_DIFFUSERS_TO_OURS[name]}.{param}"
    if rest.startswith("conv_norm_out."):
        return f"{part}.norm_out.{rest.split('.', 1)[1]}"
    return key  # conv_in, conv_out


def _ours_key_to_diffusers(key: str, num_levels: int) -> str:
    """One release key -> the diffusers AutoencoderKL key (inverse of ``_diffusers_key_to_ours``)."""
    part, rest = key.split(".", 1)
    m = re.match(r"(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.(.*)", rest)
    if m:
        kind, level, sub, j, tail = m.groups()
        idx = int(level) if kind == "down" else num_levels - 1 - int(level)
        if j is not None:
            return f"{part}.{kind}_blocks.{idx}.resnets.{j}.{tail.replace('nin_shortcut', 'conv_shortcut')}"
        return f"{part}.{kind}_blocks.{idx}.{kind}samplers.0.{tail}"
    m = re.match(r"mid\.(block_(\d)|attn_1)\.(.*)", rest)
    if m:
        sub, j, tail = m.groups()
        if j is not None:
            return f"{part}.mid_block.resnets.{int(j) - 1}.{tail.replace('nin_shortcut', 'conv_shortcut')}"
        name, param = tail.rsplit(".", 1)
        return f"{part}.mid_block.attentions.0.{_ATTN_OURS_TO_DIFFUSERS[name]}.{param}"
    if rest.startswith("norm_out."):
        return f"{part}.conv_norm_out.{rest.split('.', 1)[1]}"
    return key


def _num_levels(keys, pattern: str) -> int:
    levels = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not levels:
        raise CheckpointError("no encoder levels found in the state dict; is this an autoencoder checkpoint?")
    return max(levels) + 1


def autoencoder_state_dict_from_diffusers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers AutoencoderKL (FLUX layout) weights -> release (``ae.safetensors``) names.

    Attention projections stored as Linear [C, C] become 1x1 convs [C, C, 1, 1].
    """
    if any(k.startswith(("quant_conv.", "post_quant_conv.")) for k in state):
        raise CheckpointError("the state dict has quant_conv / post_quant_conv weights; the FLUX VAE has none")
    levels = _num_levels(state, r"encoder\.down_blocks\.(\d+)\.")
    out = {}
    for key, value in state.items():
        new = _diffusers_key_to_ours(key, levels)
        if ".attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[new] = value
    return out


def autoencoder_state_dict_to_diffusers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Release (``ae.safetensors``) names -> diffusers AutoencoderKL names (attention as Linear)."""
    levels = _num_levels(state, r"encoder\.down\.(\d+)\.")
    out = {}
    for key, value in state.items():
        new = _ours_key_to_diffusers(key, levels)
        if ".attentions.0.to_" in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out
