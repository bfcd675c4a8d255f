"""PackedBatch: the one contract between data (or inference) and the model, and its one builder.

A batch is one 1-D sequence holding several samples. A sample is a list of splits:

- ``TextSplit``: ``<|im_start|>`` + ids (causal). With ``loss=True`` the labels are
  ids + ``<|im_end|>`` (next-token targets at every position of the split). With
  ``close=True`` the ``<|im_end|>`` token is also part of the input, with the next RoPE id and no
  loss: training samples (the reference's packer appends it to every text) and inference
  contexts are closed; only the text that generation continues is left open.
- ``VitImageSplit``: ``<|vision_start|>`` + ViT patches + ``<|vision_end|>`` (full attention,
  understanding expert).
- ``VaeImageSplit``: ``<|vision_start|>`` + latent tokens + ``<|vision_end|>``; clean
  conditioning (``noised=False``: full attention, t = 0) or a flow-loss target (``noised=True``:
  ``noise`` mode, nothing later may attend to it). Latent tokens use the generation expert.

RoPE ids (spec section 3): text tokens take consecutive ids; a whole image split shares one id;
the id advances by one after a ViT image or a clean VAE image, not after a noised one (the clean
copy that usually follows reuses it).

Everything that builds a batch (training packing, inference context updates, tests) calls
``build_packed_batch``, so the sequence layout has a single definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from unimedvl.config import ModelConfig
from unimedvl.errors import DataError
from unimedvl.models.attention import PackedLayout
from unimedvl.models.embeddings import grid_position_ids, latent_position_ids, patchify
from unimedvl.tokenizer import SpecialIds


@dataclass
class TextSplit:
    """Text of one turn: token ids without markers."""

    ids: list[int]
    loss: bool = False  # cross-entropy on this text (gpt turns)
    close: bool = False  # also feed <|im_end|> as an input token (training samples, inference contexts)


@dataclass
class VitImageSplit:
    """An image seen by the vision encoder: [3, H, W] in [-1, 1], H and W multiples of the patch."""

    image: Tensor


@dataclass
class VaeImageSplit:
    """An image in the VAE latent space, as pixels (encoded in the model) or as latent tokens.

    Give ``image`` ([3, H, W] in [-1, 1], sides multiples of the VAE stride) for training and
    context building, or ``tokens`` ([h*w, p*p*z], already patchified latents) with ``grid=(h, w)``
    for denoising queries at inference.
    """

    image: Tensor | None = None
    tokens: Tensor | None = None
    grid: tuple[int, int] | None = None
    noised: bool = False  # flow-loss target (noise mode) vs clean conditioning (full mode, t = 0)
    timestep: float | None = None  # fixed t for a noised image (inference); None = sampled in training


SplitSpec = TextSplit | VitImageSplit | VaeImageSplit
Sample = Sequence[SplitSpec]


@dataclass
class PackedBatch:
    """Tensors for one packed forward. Index tensors point into the packed sequence (0..T-1)."""

    layout: PackedLayout  # samples, split lengths and modes
    position_ids: Tensor  # (T,) 1-D RoPE ids
    text_ids: Tensor  # (N_text,) ids of text and marker tokens
    text_indexes: Tensor  # (N_text,)
    # Understanding path (ViT).
    vit_tokens: Tensor  # (N_vit, p*p*3) patches in (ph, pw, c) order
    vit_position_ids: Tensor  # (N_vit,) flat ids in the ViT position tables
    vit_token_lens: list[int]  # tokens per ViT image
    vit_indexes: Tensor  # (N_vit,)
    # Generation path (VAE latents).
    vae_inputs: list[Tensor]  # per VAE image: pixels [3, H, W] to encode, or latent tokens [h*w, p*p*z]
    vae_grids: list[tuple[int, int]]  # per VAE image: latent token grid (h, w)
    vae_noised: Tensor  # (n_vae,) bool: flow-loss target
    vae_timesteps: Tensor  # (n_vae,) float: fixed t, NaN where it should be sampled, 0 for clean images
    vae_position_ids: Tensor  # (N_vae,) flat ids in the latent position table
    vae_indexes: Tensor  # (N_vae,)
    # Losses.
    ce_indexes: Tensor  # (N_ce,) positions whose output predicts ce_labels
    ce_labels: Tensor  # (N_ce,)
    ce_weights: Tensor  # (N_ce,) per-token weight (1, or 1/sqrt(split length))
    sample_kinds: list[str] = field(default_factory=list)  # free-form tags (dataset type) for logging

    @property
    def sequence_length(self) -> int:
        return self.layout.total_len

    def gen_mask(self, device: torch.device | str | None = None) -> Tensor:
        """(T,) bool, True at the tokens routed to the generation expert: every VAE latent token.

        The one routing rule of training and inference (image markers and text use the
        understanding expert); all False when the batch has no latents.
        """
        mask = torch.zeros(self.sequence_length, dtype=torch.bool, device=device)
        mask[self.vae_indexes.to(mask.device)] = True
        return mask

    @property
    def num_ce_tokens(self) -> int:
        return int(self.ce_indexes.numel())

    def to(self, device: torch.device | str) -> PackedBatch:
        """A copy with every tensor on ``device`` (the layout is device-free)."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device)
            elif f.name == "vae_inputs":
                value = [v.to(device) for v in value]
            moved[f.name] = value
        return PackedBatch(**moved)


# ---------------------------------------------------------------------------------------------
# Sequence lengths (what the builder below writes; the packer sizes samples with them before decoding).


def text_tokens(num_ids: int, close: bool = False) -> int:
    """Sequence length of a text split: <|im_start|> + ids (+ <|im_end|> when closed)."""
    return 1 + num_ids + int(close)


IMAGE_MARKERS = 2  # <|vision_start|> and <|vision_end|> around every image split


def grid_tokens(rows: int, cols: int) -> int:
    """Sequence length of an image split of ``rows x cols`` tokens: markers + the tokens."""
    return IMAGE_MARKERS + rows * cols


def image_tokens(height: int, width: int, stride: int) -> int:
    """Sequence length of an image split of ``height x width`` pixels: markers + one token per stride cell."""
    return grid_tokens(height // stride, width // stride)


def split_num_tokens(split: SplitSpec, cfg: ModelConfig) -> int:
    """Sequence length ``build_packed_batch`` gives one split."""
    if isinstance(split, TextSplit):
        return text_tokens(len(split.ids), split.close)
    if isinstance(split, VitImageSplit):
        return image_tokens(split.image.shape[1], split.image.shape[2], cfg.vit.patch_size)
    if split.image is None:
        return grid_tokens(*split.grid)
    return image_tokens(split.image.shape[1], split.image.shape[2], cfg.vae_image_stride)


def sample_num_tokens(splits: Sequence[SplitSpec], cfg: ModelConfig) -> int:
    """Sequence length of one sample."""
    return sum(split_num_tokens(s, cfg) for s in splits)


def build_packed_batch(
    samples: Sequence[Sample],
    special: SpecialIds,
    cfg: ModelConfig,
    ce_weighting: str = "token",
    kinds: Sequence[str] | None = None,
) -> PackedBatch:
    """Pack ``samples`` (lists of splits) into one PackedBatch following the spec's layout.

    ``ce_weighting``: ``token`` (every loss token counts 1) or ``sqrt_split`` (each text split
    of L loss tokens weighs 1/sqrt(L) per token, as the reference's optional re-weighting).
    """
    if ce_weighting not in ("token", "sqrt_split"):
        raise DataError(f"ce_weighting={ce_weighting!r}; choose 'token' or 'sqrt_split'")
    if not samples:
        raise DataError("build_packed_batch: no samples given")
    b = _Builder(special, cfg, ce_weighting)
    layout_splits: list[list[tuple[int, str]]] = []
    for i, sample in enumerate(samples):
        if not sample:
            raise DataError(f"build_packed_batch: sample {i} has no splits")
        layout_splits.append(b.add_sample(sample, i))
    return b.finish(PackedLayout.from_splits(layout_splits), list(kinds or []))


class _Builder:
    """Accumulates tokens of samples in order; one instance builds one batch."""

    def __init__(self, special: SpecialIds, cfg: ModelConfig, ce_weighting: str):
        self.special = special
        self.cfg = cfg
        self.ce_weighting = ce_weighting
        self.pos = 0  # next position in the packed sequence
        self.position_ids: list[int] = []
        self.text_ids: list[int] = []
        self.text_indexes: list[int] = []
        self.vit_tokens: list[Tensor] = []
        self.vit_position_ids: list[Tensor] = []
        self.vit_lens: list[int] = []
        self.vit_indexes: list[int] = []
        self.vae_inputs: list[Tensor] = []
        self.vae_grids: list[tuple[int, int]] = []
        self.vae_noised: list[bool] = []
        self.vae_timesteps: list[float] = []
        self.vae_position_ids: list[Tensor] = []
        self.vae_indexes: list[int] = []
        self.ce_indexes: list[int] = []
        self.ce_labels: list[int] = []
        self.ce_weights: list[float] = []

    def _text_token(self, token: int, rope: int) -> None:
        self.text_ids.append(token)
        self.text_indexes.append(self.pos)
        self.position_ids.append(rope)
        self.pos += 1

    def add_sample(self, sample: Sample, index: int) -> list[tuple[int, str]]:
        rope = 0
        splits: list[tuple[int, str]] = []
        for j, split in enumerate(sample):
            start = self.pos
            if isinstance(split, TextSplit):
                rope = self._add_text(split, rope)
                mode = "causal"
            elif isinstance(split, VitImageSplit):
                self._add_vit(split, rope, f"sample {index} split {j}")
                rope += 1
                mode = "full"
            elif isinstance(split, VaeImageSplit):
                self._add_vae(split, rope, f"sample {index} split {j}")
                mode = "noise" if split.noised else "full"
                if not split.noised:
                    rope += 1
            else:
                raise DataError(f"sample {index} split {j}: unknown split type {type(split).__name__}")
            # The counters above are what packing budgets with; they must describe what was written.
            assert self.pos - start == split_num_tokens(split, self.cfg), "sequence layout and counters disagree"
            splits.append((self.pos - start, mode))
        return splits

    def _add_text(self, split: TextSplit, rope: int) -> int:
        ids = [int(t) for t in split.ids]
        tokens = [self.special.bos] + ids + ([self.special.eos] if split.close else [])
        first = self.pos
        for offset, token in enumerate(tokens):
            self._text_token(token, rope + offset)
        if split.loss:
            labels = ids + [self.special.eos]
            weight = 1.0 if self.ce_weighting == "token" else 1.0 / math.sqrt(len(labels))
            self.ce_indexes.extend(range(first, first + len(labels)))
            self.ce_labels.extend(labels)
            self.ce_weights.extend([weight] * len(labels))
        return rope + len(tokens)

    def _image_markers(self, rope: int, n_tokens: int) -> range:
        """Write <|vision_start|>, reserve n_tokens positions, write <|vision_end|>; all at one rope id."""
        self._text_token(self.special.vision_start, rope)
        body = range(self.pos, self.pos + n_tokens)
        self.position_ids.extend([rope] * n_tokens)
        self.pos += n_tokens
        self._text_token(self.special.vision_end, rope)
        return body

    def _add_vit(self, split: VitImageSplit, rope: int, where: str) -> None:
        image = split.image
        if image.dim() != 3 or image.shape[0] != 3:
            raise DataError(f"{where}: a ViT image must be [3, H, W], got {tuple(image.shape)}")
        patch = self.cfg.vit.patch_size
        height, width = image.shape[1] // patch, image.shape[2] // patch
        max_side = self.cfg.vit_max_num_patch_per_side
        if not self.cfg.interpolate_pos and (height > max_side or width > max_side):
            raise DataError(
                f"{where}: a {image.shape[1]}x{image.shape[2]} image is {height}x{width} ViT patches, more "
                f"than the position table's {max_side} per side: resize it to at most {max_side * patch} "
                f"pixels per side (vit_image_transform_args.max_image_size) or raise vit_max_num_patch_per_side"
            )
        tokens = patchify(image, patch)  # raises with the fix when the size is not a multiple
        body = self._image_markers(rope, tokens.shape[0])
        self.vit_tokens.append(tokens)
        self.vit_position_ids.append(grid_position_ids(height, width, max_side, self.cfg.interpolate_pos))
        self.vit_lens.append(tokens.shape[0])
        self.vit_indexes.extend(body)

    def _add_vae(self, split: VaeImageSplit, rope: int, where: str) -> None:
        if (split.image is None) == (split.tokens is None):
            raise DataError(f"{where}: a VAE split needs exactly one of image or tokens")
        if split.image is not None:
            image = split.image
            stride = self.cfg.vae_image_stride
            if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] % stride or image.shape[2] % stride:
                raise DataError(
                    f"{where}: a VAE image must be [3, H, W] with H and W multiples of {stride} "
                    f"(VAE downsample x latent patch), got {tuple(image.shape)}: resize it "
                    f"(image_transform_args.image_stride={stride})"
                )
            grid = (image.shape[1] // stride, image.shape[2] // stride)
        else:
            if split.grid is None:
                raise DataError(f"{where}: latent tokens need grid=(h, w)")
            grid = (int(split.grid[0]), int(split.grid[1]))
            if split.tokens.shape != (grid[0] * grid[1], self.cfg.patch_latent_dim):
                raise DataError(
                    f"{where}: latent tokens of shape {tuple(split.tokens.shape)} do not match grid {grid} x "
                    f"{self.cfg.patch_latent_dim}"
                )
        try:
            position_ids = latent_position_ids(*grid, self.cfg.max_latent_size, self.cfg.interpolate_pos)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        body = self._image_markers(rope, grid[0] * grid[1])
        self.vae_inputs.append(split.image if split.image is not None else split.tokens)
        self.vae_grids.append(grid)
        self.vae_noised.append(split.noised)
        t = split.timestep if split.timestep is not None else (math.nan if split.noised else 0.0)
        self.vae_timesteps.append(float(t))
        self.vae_position_ids.append(position_ids)
        self.vae_indexes.extend(body)

    def finish(self, layout: PackedLayout, kinds: list[str]) -> PackedBatch:
        long = torch.long
        patch_dim = self.cfg.vit.patch_size**2 * 3
        return PackedBatch(
            layout=layout,
            position_ids=torch.tensor(self.position_ids, dtype=long),
            text_ids=torch.tensor(self.text_ids, dtype=long),
            text_indexes=torch.tensor(self.text_indexes, dtype=long),
            vit_tokens=torch.cat(self.vit_tokens) if self.vit_tokens else torch.zeros(0, patch_dim),
            vit_position_ids=_cat_long(self.vit_position_ids),
            vit_token_lens=self.vit_lens,
            vit_indexes=torch.tensor(self.vit_indexes, dtype=long),
            vae_inputs=self.vae_inputs,
            vae_grids=self.vae_grids,
            vae_noised=torch.tensor(self.vae_noised, dtype=torch.bool),
            vae_timesteps=torch.tensor(self.vae_timesteps, dtype=torch.float32),
            vae_position_ids=_cat_long(self.vae_position_ids),
            vae_indexes=torch.tensor(self.vae_indexes, dtype=long),
            ce_indexes=torch.tensor(self.ce_indexes, dtype=long),
            ce_labels=torch.tensor(self.ce_labels, dtype=long),
            ce_weights=torch.tensor(self.ce_weights, dtype=torch.float32),
            sample_kinds=kinds,
        )


def _cat_long(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts).long() if parts else torch.zeros(0, dtype=torch.long)
