"""SigLIP NaViT vision encoder: images at native size and aspect ratio, packed into one sequence.

Every image becomes (H/14)*(W/14) patch tokens; tokens of all images are concatenated into one
(N, 14*14*3) tensor and attention stays inside each image (one ``full`` split per image, through
``models.attention``). A learned position table of ``num_patches_per_side^2`` entries is indexed
by flat position ids (row*side+col). The release keeps all but the last SigLIP layer, so
``ViTConfig.num_hidden_layers`` counts the layers actually built; ``post_layernorm`` follows them.
Module names match the checkpoint under ``vit_model.``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from unimedvl.config import ViTConfig
from unimedvl.errors import CheckpointError, DataError
from unimedvl.models.attention import PackedLayout, packed_attention
from unimedvl.models.embeddings import activation, grid_position_ids, patchify

__all__ = [
    "PackedImages",
    "VisionEncoder",
    "pack_images",
    "patchify_image",
    "vit_config_from_hf",
    "vit_position_ids",
    "vit_state_dict_from_hf",
]


# ---------------------------------------------------------------------------------------------
# Images -> packed patches and position ids.


def _check_image_size(height: int, width: int, patch_size: int, max_side: int, interpolate: bool) -> None:
    if height % patch_size or width % patch_size:
        raise DataError(
            f"a {height} x {width} image is not a multiple of the ViT patch size {patch_size}: resize it "
            f"(the ViT image transform rounds each side to a multiple of {patch_size})"
        )
    limit = max_side * patch_size
    if not interpolate and (height > limit or width > limit):
        raise DataError(
            f"a {height} x {width} image exceeds the ViT position table ({max_side} x {max_side} patches, "
            f"{limit} pixels per side): resize the image so each side is at most {limit} pixels, or raise "
            f"vit_max_num_patch_per_side (and vit.image_size) in the model config"
        )


def patchify_image(image: Tensor, patch_size: int = 14) -> Tensor:
    """Image [C, H, W] -> patches [(H/p)*(W/p), p*p*C], row-major, pixel order (ph, pw, c)."""
    if image.ndim != 3:
        raise DataError(f"patchify_image expects one image [C, H, W], got shape {tuple(image.shape)}")
    return patchify(image, patch_size)


def vit_position_ids(
    height: int, width: int, patch_size: int = 14, max_side: int = 70, interpolate: bool = False
) -> Tensor:
    """Flat position ids ((H/p)*(W/p),) of an H x W pixel image in the max_side x max_side table.

    Extrapolate (default) raises DataError for an image larger than max_side*patch_size pixels
    per side; interpolate maps any size onto the table (see ``embeddings.grid_position_ids``).
    """
    _check_image_size(height, width, patch_size, max_side, interpolate)
    return grid_position_ids(height // patch_size, width // patch_size, max_side, interpolate)


@dataclass
class PackedImages:
    """Several images packed for ``VisionEncoder``: patches (N, p*p*C), position_ids (N,), per-image counts."""

    patches: Tensor
    position_ids: Tensor
    token_counts: list[int]


def pack_images(
    images: Sequence[Tensor], patch_size: int = 14, max_side: int = 70, interpolate: bool = False
) -> PackedImages:
    """Patchify images [C, H_i, W_i] (sizes may differ) and concatenate them in order."""
    if len(images) == 0:
        raise DataError("pack_images needs at least one image")
    patches, ids, counts = [], [], []
    for image in images:
        if image.ndim != 3:
            raise DataError(f"pack_images expects images [C, H, W], got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        ids.append(vit_position_ids(height, width, patch_size, max_side, interpolate))
        patches.append(patchify_image(image, patch_size))
        counts.append(patches[-1].shape[0])
    return PackedImages(torch.cat(patches), torch.cat(ids).to(patches[0].device), counts)


# ---------------------------------------------------------------------------------------------
# The network.


class VisionEmbeddings(nn.Module):
    """Patch pixels -> tokens: a Linear over flattened patches plus the learned position table."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Linear(cfg.patch_size * cfg.patch_size * cfg.num_channels, cfg.hidden_size)
        self.num_positions = cfg.num_patches_per_side**2
        self.position_embedding = nn.Embedding(self.num_positions, cfg.hidden_size)

    def forward(self, patches: Tensor, position_ids: Tensor) -> Tensor:
        # patches: (N, p*p*C), position_ids: (N,) -> (N, D)
        if position_ids.numel() and int(position_ids.max()) >= self.num_positions:
            # An index past the table would otherwise fail deep inside the embedding kernel.
            side = int(self.num_positions**0.5)
            raise DataError(
                f"ViT position id {int(position_ids.max())} is outside the {side} x {side} position table: "
                f"compute ids with max_side={side} (vit_position_ids / pack_images) or resize the image"
            )
        x = self.patch_embedding(patches.to(self.patch_embedding.weight.dtype))
        return x + self.position_embedding(position_ids)


class VisionAttention(nn.Module):
    """Multi-head self-attention over packed tokens; the layout keeps it inside each image."""

    def __init__(self, cfg: ViTConfig, attn_backend: str = "auto") -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.attn_backend = attn_backend
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor, layout: PackedLayout) -> Tensor:
        # x: (N, D) -> q, k, v: (N, H, Dh) -> (N, D)
        n = x.shape[0]
        q, k, v = (proj(x).view(n, self.num_heads, self.head_dim) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = packed_attention(q, k, v, layout, backend=self.attn_backend)
        return self.out_proj(out.reshape(n, -1))


class VisionMLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionEncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: ViTConfig, attn_backend: str = "auto") -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg, attn_backend)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: Tensor, layout: PackedLayout) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), layout)
        return x + self.mlp(self.layer_norm2(x))


class VisionTransformerEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers (``encoder.layers.{i}``)."""

    def __init__(self, cfg: ViTConfig, attn_backend: str = "auto") -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(cfg, attn_backend) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor, layout: PackedLayout) -> Tensor:
        for layer in self.layers:
            x = layer(x, layout)
        return x


class VisionTransformer(nn.Module):
    """embeddings -> encoder -> post_layernorm (the ``vision_model`` of the checkpoint)."""

    def __init__(self, cfg: ViTConfig, attn_backend: str = "auto") -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionTransformerEncoder(cfg, attn_backend)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, patches: Tensor, position_ids: Tensor, layout: PackedLayout) -> Tensor:
        x = self.embeddings(patches, position_ids)
        return self.post_layernorm(self.encoder(x, layout))


class VisionEncoder(nn.Module):
    """Packed images -> per-patch features (N, hidden); mounted as ``vit_model`` in the unified model."""

    def __init__(self, config: ViTConfig | None = None, attn_backend: str = "auto") -> None:
        super().__init__()
        self.config = config or ViTConfig()
        self.vision_model = VisionTransformer(self.config, attn_backend)

    @property
    def max_side(self) -> int:
        """Side of the learned position table in patches."""
        return self.config.num_patches_per_side

    def forward(
        self,
        patches: Tensor,
        position_ids: Tensor,
        token_counts: Sequence[int] | Tensor,
        layout: PackedLayout | None = None,
    ) -> Tensor:
        """patches (N, p*p*C), position_ids (N,), token_counts (one per image, summing to N) -> (N, hidden).

        ``layout`` may be passed to reuse one built elsewhere; by default each image is one
        sample with one ``full`` split, so attention never crosses images.
        """
        counts = [int(n) for n in (token_counts.tolist() if isinstance(token_counts, Tensor) else token_counts)]
        if patches.ndim != 2 or position_ids.shape != patches.shape[:1]:
            raise DataError(
                f"VisionEncoder expects patches (N, p*p*C) and position_ids (N,), got {tuple(patches.shape)} "
                f"and {tuple(position_ids.shape)}"
            )
        if sum(counts) != patches.shape[0]:
            raise DataError(
                f"VisionEncoder: token_counts {counts} sum to {sum(counts)} but there are {patches.shape[0]} patches"
            )
        if layout is None:
            layout = PackedLayout.from_splits([[(n, "full")] for n in counts])
        return self.vision_model(patches, position_ids, layout)

    def encode_images(self, images: Sequence[Tensor], interpolate: bool = False) -> list[Tensor]:
        """Convenience: images [C, H_i, W_i] in [-1, 1] -> one (tokens_i, hidden) tensor per image."""
        packed = pack_images(images, self.config.patch_size, self.max_side, interpolate)
        out = self(packed.patches, packed.position_ids, packed.token_counts)
        return list(out.split(packed.token_counts))

    @classmethod
    def from_hf_pretrained(
        cls,
        path: str | Path,
        num_layers: int | None = None,
        attn_backend: str = "auto",
        map_location: str | torch.device = "cpu",
    ) -> VisionEncoder:
        """Load a local HF SigLIP checkpoint directory (config.json + *.safetensors).

        Accepts SiglipVisionModel (keys with or without ``vision_model.``) and SiglipModel
        (``vision_model.`` beside the text tower, which is ignored). Rule of the release: keep
        ``config.num_hidden_layers - 1`` layers (the penultimate layer's output feeds
        ``post_layernorm``); ``num_layers`` overrides the count. The Conv2d patch weight becomes
        the Linear patch embedding.
        """
        from safetensors.torch import load_file

        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{path}: no config.json; pass a SigLIP checkpoint directory")
        cfg = vit_config_from_hf(json.loads(config_file.read_text()), num_layers, source=str(config_file))
        # model.safetensors when present (ignores variants such as fp16 copies), else all shards
        single = path / "model.safetensors"
        files = [single] if single.is_file() else sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path}: no *.safetensors weights beside config.json")
        state: dict[str, Tensor] = {}
        for file in files:
            state.update(load_file(str(file), device=str(map_location)))
        model = cls(cfg, attn_backend)
        ours = vit_state_dict_from_hf(state, cfg.num_hidden_layers, source=str(path))
        missing = sorted(set(model.state_dict()) - set(ours))
        unexpected = sorted(set(ours) - set(model.state_dict()))
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: SigLIP weights do not fit the vision encoder (missing: {', '.join(missing[:4]) or 'none'}; "
                f"unexpected: {', '.join(unexpected[:4]) or 'none'})"
            )
        bad = [
            f"{k} {tuple(ours[k].shape)} vs {tuple(v.shape)}"
            for k, v in model.state_dict().items()
            if ours[k].shape != v.shape
        ]
        if bad:
            raise CheckpointError(f"{path}: weights do not match config.json: {'; '.join(bad[:4])}")
        model.load_state_dict(ours, strict=True)
        return model


def vit_config_from_hf(config: Mapping, num_layers: int | None = None, source: str = "config.json") -> ViTConfig:
    """ViTConfig from a SigLIP (vision or dual-tower) config dict; keeps config layers - 1 unless told."""
    if "vision_config" in config:  # SiglipModel: the vision tower's config is nested
        config = config["vision_config"]
    total = int(config.get("num_hidden_layers", 12))
    keep = total - 1 if num_layers is None else num_layers
    if not 1 <= keep <= total:
        raise CheckpointError(f"{source}: cannot keep {keep} of the {total} SigLIP layers")
    return ViTConfig(
        hidden_size=config.get("hidden_size", 768),
        intermediate_size=config.get("intermediate_size", 3072),
        num_attention_heads=config.get("num_attention_heads", 12),
        num_hidden_layers=keep,
        patch_size=config.get("patch_size", 16),
        num_channels=config.get("num_channels", 3),
        image_size=config.get("image_size", 224),
        layer_norm_eps=config.get("layer_norm_eps", 1e-6),
        hidden_act=config.get("hidden_act", "gelu_pytorch_tanh"),
    )


def vit_state_dict_from_hf(
    state: Mapping[str, Tensor], num_layers: int, source: str = "<state dict>"
) -> dict[str, Tensor]:
    """HF SigLIP vision weights -> ``VisionEncoder`` keys (``vision_model.*``), first ``num_layers`` layers.

    The tower prefix is found from the patch-embedding key, so ``embeddings.*``,
    ``vision_model.embeddings.*`` and deeper wrappers all work; the pooling head, the text tower and
    layers >= num_layers are dropped; a Conv2d patch weight [D, C, p, p] becomes the Linear
    [D, p*p*C] in (ph, pw, c) order.
    """
    anchor = "embeddings.patch_embedding.weight"
    candidates = [k[: -len(anchor)] for k in state if k.endswith(anchor) and "text" not in k]
    if not candidates:
        raise CheckpointError(f"{source}: no '{anchor}' key; this is not a SigLIP vision checkpoint")
    prefix = min(candidates, key=len)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith("head.") or name.startswith("embeddings.position_ids"):
            continue
        if name.startswith("encoder.layers."):
            if int(name.split(".")[2]) >= num_layers:
                continue  # the release drops the last layer(s)
        if name == anchor and value.ndim == 4:
            value = value.permute(0, 2, 3, 1).reshape(value.shape[0], -1)
        out["vision_model." + name] = value
    return out
