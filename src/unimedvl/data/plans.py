"""Sequence plans: how one record of a dataset type becomes the splits of one training sample.

A plan turns a :class:`~unimedvl.data.records.Record` into a list of *plan items* (text pieces and
image references with the path they take); :class:`SampleBuilder` measures the items (tokens,
from the transformed image sizes, before any pixel is decoded) and then materialises them into
the ``TextSplit`` / ``VitImageSplit`` / ``VaeImageSplit`` lists that ``build_packed_batch`` packs.

The conversation is walked in reading order, so every image sits where its ``<image>``
placeholder is. Per turn role:

- human text: a condition, no loss; human images: conditions (ViT and/or clean VAE, per type);
- gpt text: cross-entropy; gpt images: generation targets (noised VAE, flow loss).

Dataset types (spec/medical.md section 2; the registry names live in :mod:`.datasets`):

================================  =====================================================================
``vlm_sft``                       [images via ViT] + conversation; gpt turns CE
``vlm_sft_recon``                 ``vlm_sft``, then a noised VAE copy of every input image (flow loss),
                                  after the conversation so the answers are learnt from the ViT alone
``text_only``                     text CE only (a record with images is refused)
``t2i``                           caption (no loss, droppable) -> image (flow loss)
``unified_edit``                  source (clean VAE + ViT, droppable) -> instruction (no loss, droppable)
                                  -> target (flow); every target followed by more splits gets a clean
                                  VAE + ViT copy (multi-step edits)
``MedicalImageEditing...``        input (clean VAE + ViT) -> instruction -> gpt text (CE) -> output
                                  (flow): "assess, then restore"
``CounterfactualMedical...``      input (clean VAE + ViT) -> instruction -> counterfactual (flow)
                                  -> explanation (CE)
================================  =====================================================================

Noised targets and what follows them (spec unified-model.md section 3): a noised image is
invisible to every later split and does not advance the RoPE id. So a noised target that is
followed by more splits (the counterfactual explanation, the next step of an edit, the next
reconstruction) is followed immediately by a clean VAE copy of the same image, which reuses the
target's RoPE id (``build_packed_batch`` advances only after the clean copy); later text attends
to the copy. ``unified_edit`` adds a ViT copy as well.

Conditional dropout (generation types only; drawn per sample by the packer, see
:class:`Drops`): a dropped condition is left out of the sample. ``text`` drops every text split
*before the last generation target* (instruction, caption, and the "assess" text of medical
editing, because the text-free guidance context at inference lacks all of them); ``vit`` / ``vae``
drop the ViT / clean-VAE splits of the input images. When both image paths of the inputs are
dropped, gpt text that is kept (for instance the counterfactual explanation) stays in the
sequence but carries no loss: it cannot be predicted without the input.

Models without a path (``ModelConfig.visual_und`` / ``visual_gen`` false) are handled here so
that no plan ever emits a split the model cannot embed:

- no understanding path: ViT splits are left out (VAE conditions carry the image); ``vlm_sft``,
  ``vlm_sft_recon`` cannot work at all and are refused up front (use ``text_only`` for text);
- no generation path: VAE splits are left out; ``vlm_sft_recon`` becomes ``vlm_sft``; medical
  editing and counterfactual become understanding samples (input via ViT, instruction, gpt text
  with CE, no dropout); ``t2i`` and ``unified_edit`` are refused up front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from PIL import Image

from unimedvl.config import ModelConfig
from unimedvl.data.records import ImageRef, Record
from unimedvl.errors import DataError
from unimedvl.imaging.medical_io import image_size, load_image
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS
from unimedvl.imaging.transforms import ImageTransform
from unimedvl.models.packed_batch import (
    SplitSpec,
    TextSplit,
    VaeImageSplit,
    VitImageSplit,
    image_tokens,
    sample_num_tokens,
    text_tokens,
)
from unimedvl.tokenizer import Tokenizer

# ---------------------------------------------------------------------------------------------
# Plan items.


@dataclass(frozen=True)
class TextItem:
    """A piece of text: a condition (``loss=False``) or a cross-entropy target."""

    text: str
    loss: bool = False


@dataclass(frozen=True)
class ImageItem:
    """An image taking one path: ``vit`` (understanding), ``vae`` clean (condition) or ``vae`` noised (target)."""

    ref: ImageRef
    path: str  # "vit" or "vae"
    noised: bool = False  # flow-loss target (VAE only)


PlanItem = TextItem | ImageItem


@dataclass(frozen=True)
class Drops:
    """Which conditions conditional dropout removes from one sample."""

    text: bool = False  # text before the last generation target
    vit: bool = False  # ViT splits of the input images
    vae: bool = False  # clean VAE splits of the input images

    def to_list(self) -> list[bool]:
        return [self.text, self.vit, self.vae]

    @classmethod
    def from_list(cls, values: Sequence[bool]) -> Drops:
        return cls(*(bool(v) for v in values))


@dataclass(frozen=True)
class ModelPaths:
    """Which image paths the model has (``visual_und``: ViT, ``visual_gen``: VAE)."""

    und: bool = True
    gen: bool = True

    @classmethod
    def of(cls, cfg: ModelConfig) -> ModelPaths:
        return cls(und=cfg.visual_und, gen=cfg.visual_gen)


# ---------------------------------------------------------------------------------------------
# The plan.


@dataclass(frozen=True)
class SequencePlan:
    """How a dataset type lays out its records; configurable, or subclass and override :meth:`plan`.

    ``needs`` names the model path(s) without which the type is useless: ``"und"``, ``"gen"``,
    ``"und_or_gen"`` or ``""``; the loader refuses such a type up front (:meth:`unsupported`).
    """

    name: str
    input_vit: bool = False  # human-turn images go through the ViT
    input_vae: bool = False  # human-turn images go in as clean VAE conditions
    inputs: str = "optional"  # input images: "optional", "required" or "forbidden"
    outputs: str = "forbidden"  # gpt-turn images (flow targets): "optional", "required" or "forbidden"
    target_vit_copy: bool = False  # clean copies of non-final targets also go through the ViT
    recon: bool = False  # append a noised VAE reconstruction of every input image
    dropout: bool = False  # conditional dropout applies (generation types)
    ce_needs_input: bool = False  # gpt text carries no loss when every input image is dropped
    trains_text: bool = True  # records normally carry gpt text with CE (for has_understanding_data)
    needs: str = ""  # "und", "gen", "und_or_gen" or ""

    def unsupported(self, paths: ModelPaths) -> str | None:
        """Why this type cannot train a model with ``paths`` (None when it can)."""
        missing = {
            "und": not paths.und,
            "gen": not paths.gen,
            "und_or_gen": not (paths.und or paths.gen),
            "": False,
        }[self.needs]
        if not missing:
            return None
        what = {
            "und": "the understanding path (visual_und)",
            "gen": "the generation path (visual_gen)",
            "und_or_gen": "an image path (visual_und or visual_gen)",
        }[self.needs]
        return f"dataset type {self.name!r} needs {what}, which the model is built without"

    # -- what the plan emits for a model (used for transform checks and trainer checks) -------

    def generates(self, paths: ModelPaths) -> bool:
        """Samples carry flow-loss targets."""
        return paths.gen and (self.outputs != "forbidden" or self.recon)

    def uses_vit(self, paths: ModelPaths) -> bool:
        return paths.und and (self.input_vit or self.target_vit_copy)

    def uses_vae(self, paths: ModelPaths) -> bool:
        return paths.gen and (self.input_vae or self.generates(paths))

    def understands(self, paths: ModelPaths) -> bool:
        """Samples carry cross-entropy text."""
        return self.trains_text and self.unsupported(paths) is None

    # -- the plan -----------------------------------------------------------------------------

    def check(self, record: Record) -> None:
        """DataError when the record cannot be a sample of this type."""
        for role, images, rule in (
            ("input", record.input_images, self.inputs),
            ("output", record.output_images, self.outputs),
        ):
            if rule == "required" and not images:
                raise DataError(f"dataset type {self.name!r} needs at least one {role} image; the record has none")
            if rule == "forbidden" and images:
                hint = {"input": "vlm_sft or an editing type", "output": "t2i or an editing type"}[role]
                raise DataError(
                    f"dataset type {self.name!r} takes no {role} images but the record has "
                    f"{len(images)}; put it in a {hint} dataset"
                )

    def plan(self, record: Record, drops: Drops, paths: ModelPaths) -> list[PlanItem]:
        """The record as plan items, in sequence order (conditions dropped per ``drops``)."""
        self.check(record)
        gen = paths.gen and self.outputs != "forbidden"
        if not (gen and self.dropout):
            drops = Drops()
        items: list[PlanItem] = []
        for turn in record.turns:
            human = turn.role == "human"
            for part in turn.parts():
                if isinstance(part, str):
                    items.append(TextItem(part, loss=not human))
                elif human:
                    if self.input_vae and paths.gen and not drops.vae:
                        items.append(ImageItem(part, "vae"))
                    if self.input_vit and paths.und and not drops.vit:
                        items.append(ImageItem(part, "vit"))
                elif gen:
                    items.append(ImageItem(part, "vae", noised=True))
        targets = [i for i, item in enumerate(items) if isinstance(item, ImageItem) and item.noised]
        if drops.text and targets:
            items = [item for i, item in enumerate(items) if not (isinstance(item, TextItem) and i < targets[-1])]
        inputs_gone = record.input_images and (drops.vit or not paths.und) and (drops.vae or not paths.gen)
        if self.ce_needs_input and inputs_gone and gen:
            items = [replace(item, loss=False) if isinstance(item, TextItem) else item for item in items]
        if self.recon and paths.gen:
            items.extend(ImageItem(ref, "vae", noised=True) for ref in record.input_images)
        items = self._clean_copies(items, vit=self.target_vit_copy and paths.und)
        if not any(getattr(item, "loss", False) or getattr(item, "noised", False) for item in items):
            raise DataError(
                f"dataset type {self.name!r}: the record has nothing to learn from (no gpt text and no output image)"
            )
        return items

    @staticmethod
    def _clean_copies(items: list[PlanItem], vit: bool) -> list[PlanItem]:
        """Follow every noised target that is not the last split by its clean VAE (+ ViT) copy."""
        out: list[PlanItem] = []
        for i, item in enumerate(items):
            out.append(item)
            if isinstance(item, ImageItem) and item.noised and i < len(items) - 1:
                out.append(ImageItem(item.ref, "vae"))
                if vit:
                    out.append(ImageItem(item.ref, "vit"))
        return out


VLM_SFT = SequencePlan("vlm_sft", input_vit=True, needs="und")
VLM_SFT_RECON = SequencePlan("vlm_sft_recon", input_vit=True, inputs="required", recon=True, needs="und")
TEXT_ONLY = SequencePlan("text_only", inputs="forbidden")
T2I = SequencePlan("t2i", inputs="forbidden", outputs="required", dropout=True, trains_text=False, needs="gen")
UNIFIED_EDIT = SequencePlan(
    "unified_edit",
    input_vit=True,
    input_vae=True,
    inputs="required",
    outputs="required",
    target_vit_copy=True,
    dropout=True,
    trains_text=False,
    needs="gen",
)
MEDICAL_EDITING = SequencePlan(
    "MedicalImageEditingIterableDataset",
    input_vit=True,
    input_vae=True,
    inputs="required",
    outputs="required",
    dropout=True,
    ce_needs_input=True,
    needs="und_or_gen",
)
COUNTERFACTUAL = replace(MEDICAL_EDITING, name="CounterfactualMedicalIterableDataset_ver1")

# ---------------------------------------------------------------------------------------------
# Measuring and materialising.


@dataclass
class Measured:
    """A planned sample with its text encoded and its length known; images not loaded yet."""

    items: list[PlanItem]
    ids: list[list[int] | None]  # token ids per text item (None for images, and for all when not encoded)
    num_tokens: int  # sequence length from the transformed image sizes (a lower bound when not encoded)
    encoded: bool = True  # False: over the limit already by its lower bound, the text was never tokenised


class SampleBuilder:
    """Measures and materialises plan items with one dataset's tokenizer and image transforms."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        cfg: ModelConfig,
        vae_transform: ImageTransform | None,
        vit_transform: ImageTransform | None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        sizer: Callable[[str], tuple[int, int]] | None = None,
    ):
        """``sizer``: (width, height) of an image path spec (default: its header, within ``max_image_pixels``)."""
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.transforms = {"vae": vae_transform, "vit": vit_transform}
        self.strides = {"vae": cfg.vae_image_stride, "vit": cfg.vit.patch_size}
        self.max_image_pixels = max_image_pixels
        self.sizer = sizer or (lambda path: image_size(path, max_image_pixels=max_image_pixels))

    def _transform(self, path: str) -> ImageTransform:
        transform = self.transforms[path]
        if transform is None:  # the mix check makes this unreachable for registered types
            key = "image_transform_args" if path == "vae" else "vit_image_transform_args"
            raise DataError(f"a {path.upper()} image needs {key} in the mix entry of this dataset type")
        return transform

    def _image_tokens(self, item: ImageItem) -> int:
        ref = item.ref
        width, height = (ref.width, ref.height) if ref.width and ref.height else self.sizer(ref.path)
        new_w, new_h = self._transform(item.path).target_size(width, height)
        return image_tokens(new_h, new_w, self.strides[item.path])

    def lower_bound(self, items: Sequence[PlanItem], limit: int) -> int | None:
        """The sample's length bound when it already exceeds ``limit`` before any text is tokenised, else None.

        Each text needs at least bytes / (longest token) tokens (:meth:`Tokenizer.min_tokens`): a 10 MB
        question is refused after one pass over its bytes instead of minutes of tokenising.
        """
        images = sum(self._image_tokens(i) for i in items if isinstance(i, ImageItem))
        texts = [i.text for i in items if isinstance(i, TextItem)]
        per_token = self.tokenizer.max_token_bytes
        raw = images + sum(text_tokens(-(-len(t.encode("utf-8")) // per_token), close=True) for t in texts)
        if raw <= limit:  # the bound cannot prove it too long: the exact count decides
            return None
        bound = images + sum(text_tokens(self.tokenizer.min_tokens(t), close=True) for t in texts)
        return bound if bound > limit else None

    def measure(self, items: Sequence[PlanItem], limit: int | None = None) -> Measured:
        """Encode the text and size the images (declared size, else the file header).

        With ``limit``, a sample that exceeds it by :meth:`lower_bound` alone comes back unencoded.
        """
        if limit is not None:
            bound = self.lower_bound(items, limit)
            if bound is not None:
                return Measured(list(items), [None] * len(items), bound, encoded=False)
        ids: list[list[int] | None] = []
        total = 0
        for item in items:
            if isinstance(item, TextItem):
                encoded = self.tokenizer.encode(item.text)
                ids.append(encoded)
                total += text_tokens(len(encoded), close=True)
            else:
                ids.append(None)
                total += self._image_tokens(item)
        return Measured(list(items), ids, total)

    def materialize(self, measured: Measured) -> tuple[list[SplitSpec], int]:
        """Load and transform the images; (splits, sequence length from the actual tensors)."""
        if not measured.encoded:
            raise ValueError("materialize() of a sample that was measured over its limit and never encoded")
        pictures: dict[str, Image.Image] = {}
        tensors: dict[tuple[str, str], object] = {}
        splits: list[SplitSpec] = []
        for item, ids in zip(measured.items, measured.ids):
            if isinstance(item, TextItem):
                # Closed: <|im_end|> follows every text as an input token (no loss), as the reference's
                # packer writes it and as every inference context holds it; without it a fine-tuned
                # model sees at inference a token its training never fed it.
                splits.append(TextSplit(list(ids), loss=item.loss, close=True))
                continue
            key = (item.ref.path, item.path)
            if key not in tensors:
                if item.ref.path not in pictures:
                    pictures[item.ref.path] = load_image(item.ref.path, max_image_pixels=self.max_image_pixels)
                tensors[key] = self._transform(item.path)(pictures[item.ref.path])
            image = tensors[key]
            if item.path == "vit":
                splits.append(VitImageSplit(image))
            else:
                splits.append(VaeImageSplit(image=image, noised=item.noised))
        return splits, sample_num_tokens(splits, self.cfg)
