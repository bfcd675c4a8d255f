"""Batched inference: answer questions about images, edit images, generate images from text.

A ``Request`` is an interleaved list of images and texts plus the task. ``Inferencer.run`` takes
any number of them and serves them together, in three phases that each batch across requests:

1. ``prepare``: build the contexts (spec unified-model.md section 5). For understanding an
   image enters through the ViT only; for editing/generation as a VAE block (t = 0, generation
   expert) then a ViT block. ``full`` gets everything; ``cfg_text`` is a copy of ``full`` made
   just before the latest text (or after the last image); ``cfg_img`` gets the texts only. In
   thinking mode a system prompt goes first into ``full`` and ``cfg_img``. Updates of all
   contexts run in rounds, one forward per round.
2. ``decode_text``: the answers, and the reasoning of thinking-mode image requests, decoded
   together; the reasoning is then added to ``full`` only.
3. ``generate_images``: requests with the same GuidanceConfig are denoised together
   (:func:`unimedvl.sampling.sample`: Euler, or a faster solver / step cache). Each model
   evaluation is one forward: the latent query of every request (or of those a step cache
   computes) against the rows of every guidance branch it needs (``GuidedVelocity``),
   read-only on the cache. ``Result.model_passes`` counts the branches evaluated.

Every request has its own seed and generators, so its result does not depend on what else is
in the batch: generated tokens are identical to serving it alone, and image latents equal to fp32
round-off (batched matrix products may sum in another order; measured on the debug model, at most a
few 1e-6 in the latents, i.e. one grey level on well under 1% of pixels).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from unimedvl.checkpoint.inference_config import (
    RELEASE_VAE_TRANSFORM,
    RELEASE_VIT_TRANSFORM,
    THINK_PROMPT_SETS,
    InferenceConfig,
    fitted_transform,
    resolve_think_prompts,
)
from unimedvl.defaults import MAX_NEW_TOKENS, TEMPERATURE, TOP_P
from unimedvl.errors import ConfigError, DataError
from unimedvl.imaging.formats import has_image_suffix
from unimedvl.imaging.medical_io import image_size, load_image
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS
from unimedvl.imaging.transforms import ImageTransform, to_pil, to_tensor
from unimedvl.inference.context import Context, ContextPool, TextOptions
from unimedvl.inference.velocity import GuidedVelocity  # noqa: F401 (re-exported)
from unimedvl.models.embeddings import unpatchify_latent
from unimedvl.models.packed_batch import SplitSpec, TextSplit, VaeImageSplit, VitImageSplit
from unimedvl.models.unified import UnifiedModel
from unimedvl.sampling import sample
from unimedvl.sampling.flow import GuidanceConfig, check_strength, start_from_image
from unimedvl.tokenizer import Tokenizer

ImageInput = Union[Image.Image, np.ndarray, Tensor, str, "os.PathLike[str]"]
TASKS = ("understand", "edit", "generate")

# The thinking-mode system prompts (the release's by default; checkpoint/inference_config.py explains the sets).
THINK_PROMPTS = THINK_PROMPT_SETS["release"]

# The release's transforms (defaults of a checkpoint without inference_config.json).
VAE_TRANSFORM = RELEASE_VAE_TRANSFORM
VIT_TRANSFORM = RELEASE_VIT_TRANSFORM


# ---------------------------------------------------------------------------------------------
# Requests and results.


@dataclass
class Request:
    """One inference job: interleaved images and texts, and what to produce from them.

    In ``inputs`` a ``str`` is always a text: give image files as ``pathlib.Path``.
    """

    inputs: list[Any]  # texts (str) and images (PIL, numpy, [3,H,W] tensor in [-1,1], pathlib.Path), in order
    task: str = "understand"  # understand (text out) | edit | generate (image out)
    think: bool = False  # reason first (system prompt); the reasoning is returned
    max_new_tokens: int = MAX_NEW_TOKENS  # answer / reasoning length limit
    temperature: float = TEMPERATURE  # 0: greedy decoding
    top_p: float = TOP_P  # nucleus sampling mass (with temperature > 0)
    guidance: GuidanceConfig | None = None  # image requests; None: the checkpoint's preset for the task
    height: int | None = None  # output size in pixels (image requests); None: the last input
    width: int | None = None  # image's size after the VAE transform, else the default size
    seed: int | None = None  # noise and sampling seed; None: drawn from torch's global RNG
    strength: float | None = None  # edit: 1 samples from pure noise; < 1 starts from the last input image noised to
    # t = strength; None: the guidance's (the checkpoint's preset: a demo model's edits start at its evaluated 0.1)
    on_token: Callable[[int], None] | None = None  # hears each decoded token (answer or reasoning) as it comes
    stop: Callable[[], bool] | None = None  # checked after each decoded token: True ends the text there

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task={self.task!r}; choose one of {', '.join(TASKS)}")
        if isinstance(self.inputs, (str, os.PathLike, Image.Image, np.ndarray, Tensor)):
            self.inputs = [self.inputs]
        self.inputs = list(self.inputs)
        if not self.inputs:
            raise DataError("a request needs at least one input (a text, or images and a text)")
        for index, item in enumerate(self.inputs):
            if isinstance(item, str) and not item.strip():
                raise DataError("an input text is empty; give a question, instruction or prompt")
            if isinstance(item, str) and _names_image_file(item):
                warnings.warn(
                    f"inputs[{index}] {item!r} is read as a text (in a Request a str is a text); "
                    f"pass Path({item!r}) to give the image",
                    UserWarning,
                    stacklevel=3,
                )
        if self.task != "understand" and not any(isinstance(i, str) for i in self.inputs):
            raise DataError(f"a {self.task} request needs a text (the instruction or prompt)")
        if self.strength is not None:
            check_strength(self.strength)
        if self.strength is not None and self.strength < 1.0 and self.task != "edit":
            raise ConfigError(
                f"strength={self.strength} starts from an input image: it is an edit setting, a "
                f"{self.task} request takes strength 1"
            )

    @property
    def makes_image(self) -> bool:
        return self.task != "understand"


def _names_image_file(text: str) -> bool:
    """True for a text that is the path of an existing image file (a likely mistake in a Request)."""
    path = text.strip().partition("#")[0]
    return "\n" not in text and has_image_suffix(path) and os.path.isfile(path)


@dataclass
class Result:
    """What one request produced."""

    text: str | None = None  # the answer (understand)
    thinking: str | None = None  # the reasoning (think=True); "" when the model wrote none
    image: Image.Image | None = None  # the generated image (edit / generate)
    seed: int | None = None  # the seed used (reproduce with Request(seed=...))
    token_ids: list[int] = field(default_factory=list)  # generated ids (answer or reasoning)
    prompt_tokens: int = 0  # tokens in the context the text was decoded from (0: no text decoded)
    model_passes: int = 0  # image requests: guidance branches evaluated by the model over all steps


@dataclass
class _Fork:
    """Queue marker: copy ``full`` into the job's ``cfg_text`` at this point."""

    job: _Job


@dataclass
class _Job:
    request: Request
    seed: int
    full: Context
    guidance: GuidanceConfig | None = None  # image jobs: the request's, else the checkpoint's preset
    cfg_img: Context | None = None
    cfg_text: Context | None = None
    size: tuple[int, int] | None = None  # output (height, width) in pixels
    source: Tensor | None = None  # strength < 1: the last input image after the VAE rule, [3, H, W] in [-1, 1]
    result: Result = field(default_factory=Result)

    @property
    def strength(self) -> float:
        """The SDEdit start: the request's, else its guidance's for an edit; 1 (pure noise) for a generation."""
        if self.request.strength is not None:
            return self.request.strength
        return self.guidance.strength if self.request.task == "edit" and self.guidance is not None else 1.0


@dataclass
class Plan:
    """Requests being served: their contexts in one pool, and their results so far."""

    pool: ContextPool
    jobs: list[_Job]

    @property
    def results(self) -> list[Result]:
        return [j.result for j in self.jobs]


# ---------------------------------------------------------------------------------------------
# Input images.


def load_input_image(
    image: ImageInput, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS, reduce_to: tuple[int, int] | None = None
) -> Image.Image:
    """An RGB PIL image from a PIL image, a numpy array, a [3,H,W] tensor in [-1,1] or a path.

    Paths go through ``medical_io.load_image`` (PNG, JPEG, TIFF, DICOM, NIfTI, .npy, with
    ``#window=...`` options): refused over ``max_image_pixels`` before decoding, and decoded at a
    reduced size when ``reduce_to`` (the size the caller resizes to next) allows. Arrays: uint8, or
    floats in [0, 1]; (H, W), (H, W, 1|3|4).
    """
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise DataError(f"an input image is empty ({image.width}x{image.height})")
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_image_pixels=max_image_pixels, reduce_to=reduce_to)
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise DataError(f"an image tensor must be [3, H, W] in [-1, 1], got shape {tuple(image.shape)}")
        return to_pil(image)
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or 0 in array.shape:
            raise DataError(f"an image array must be (H, W) or (H, W, 3|4), got shape {image.shape}")
        if array.dtype != np.uint8:
            if (
                not np.issubdtype(array.dtype, np.floating)
                or not np.isfinite(array).all()
                or (array.size and (array.min() < 0 or array.max() > 1))
            ):
                raise DataError(
                    f"an image array of dtype {array.dtype} must be uint8 or floats in [0, 1]; window it first "
                    "(e.g. save it as .npy and pass the path with '#window=minmax', or scale it to uint8)"
                )
            array = np.clip(np.floor(array * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    raise DataError(
        f"an image must be a PIL image, numpy array, [3,H,W] tensor or file path, got {type(image).__name__}"
    )


def fit_transform(transform: ImageTransform, table_side: int, what: str, interpolate: bool) -> ImageTransform:
    """``transform`` with max_image_size lowered to what the position table holds (with a notice)."""
    fitted = fitted_transform(transform, table_side, interpolate)
    if fitted == transform:
        return transform
    limit = fitted.max_image_size
    warnings.warn(
        f"{what} max_image_size={transform.max_image_size} exceeds this model's position table "
        f"({table_side} x {transform.image_stride} = {limit} pixels per side): larger images are resized to "
        f"at most {limit} pixels per side",
        UserWarning,
        stacklevel=3,
    )
    return fitted


# ---------------------------------------------------------------------------------------------
# Denoising.

# ---------------------------------------------------------------------------------------------
# The inferencer.


class Inferencer:
    """Serves Requests on a UnifiedModel with the KV cache (see the module docstring)."""

    def __init__(
        self,
        model: UnifiedModel,
        tokenizer: Tokenizer,
        vae_transform: ImageTransform | None = None,
        vit_transform: ImageTransform | None = None,
        think_prompts: dict[str, str] | None = None,
        config: InferenceConfig | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        """``config``: the checkpoint's transforms and sampling defaults (release defaults when None);
        ``vae_transform`` / ``vit_transform`` / ``think_prompts`` override its values;
        ``max_image_pixels``: image files with more pixels are refused before decoding."""
        cfg = model.config
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.special = tokenizer.special
        self.max_image_pixels = max_image_pixels
        if len(tokenizer) > cfg.llm.vocab_size:
            raise ConfigError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {cfg.llm.vocab_size}: "
                "use the tokenizer saved with this checkpoint"
            )
        config = config or InferenceConfig()
        vae_transform = vae_transform or config.vae_transform
        vit_transform = vit_transform or config.vit_transform
        if vae_transform.image_stride != cfg.vae_image_stride:
            raise ConfigError(
                f"the VAE transform's image_stride={vae_transform.image_stride} must equal the model's "
                f"{cfg.vae_image_stride} (VAE downsample x latent patch)"
            )
        if vit_transform.image_stride != cfg.vit.patch_size:
            raise ConfigError(
                f"the ViT transform's image_stride={vit_transform.image_stride} must equal the ViT patch size "
                f"{cfg.vit.patch_size}"
            )
        vae_transform = fit_transform(vae_transform, cfg.max_latent_size, "VAE transform", cfg.interpolate_pos)
        vit_transform = fit_transform(
            vit_transform, cfg.vit_max_num_patch_per_side, "ViT transform", cfg.interpolate_pos
        )
        prompts = {**THINK_PROMPTS, **(config.think_prompts or {}), **resolve_think_prompts(think_prompts or {})}
        self.config = dataclasses.replace(
            config, vae_transform=vae_transform, vit_transform=vit_transform, think_prompts=prompts
        )

    @property
    def vae_transform(self) -> ImageTransform:
        """The resize rule every input image goes through first."""
        return self.config.vae_transform

    @property
    def vit_transform(self) -> ImageTransform:
        """The transform of ViT (understanding) inputs, applied after the VAE rule."""
        return self.config.vit_transform

    @property
    def think_prompts(self) -> dict[str, str]:
        return dict(self.config.think_prompts)

    @property
    def default_size(self) -> int:
        """Side of text-to-image outputs when none is given: the largest side the model is fed."""
        return self.config.image_size

    # -- building blocks --------------------------------------------------------------------

    @property
    def max_text_tokens(self) -> int:
        """The longest text the model takes: its context length (llm ``max_position_embeddings``)."""
        return self.model.config.llm.max_position_embeddings

    def text_split(self, text: str) -> TextSplit:
        """A closed text block (``<|im_start|>`` text ``<|im_end|>``) for a context.

        A text longer than the model's context is a DataError; one that is so by its byte count
        alone is refused before it is tokenised (a pasted 10 MB document costs one pass, not minutes).
        """
        limit = self.max_text_tokens
        if self.tokenizer.tokens_exceed(text, limit):
            self._too_long(f"at least {self.tokenizer.min_tokens(text)}", limit)
        ids = self.tokenizer.encode(text)
        if len(ids) > limit:
            self._too_long(str(len(ids)), limit)
        return TextSplit(ids, close=True)

    @staticmethod
    def _too_long(count: str, limit: int) -> None:
        raise DataError(
            f"an input text is {count} tokens, more than this model's context of {limit} tokens "
            "(max_position_embeddings in llm_config.json); shorten it"
        )

    def load_image(self, image: ImageInput) -> Image.Image:
        """An input image after the VAE resize rule; a file is checked against the pixel limit from its
        header and, when much larger than the rule's size, decoded reduced (JPEG draft, integer reduce)."""
        target = None
        if isinstance(image, (str, os.PathLike)):
            target = self.vae_transform.target_size(*image_size(image, max_image_pixels=self.max_image_pixels))
        return self.vae_transform.resize(load_input_image(image, self.max_image_pixels, reduce_to=target))

    def image_splits(self, image: ImageInput, generation: bool) -> tuple[list[SplitSpec], tuple[int, int]]:
        """Blocks for one input image and its size (height, width) after the VAE rule.

        The image is resized with the VAE transform's rule first, even for understanding, then
        the ViT transform is applied to that. Generation contexts get the VAE block then the ViT
        block; understanding contexts the ViT block only.
        """
        cfg = self.model.config
        pil = self.load_image(image)
        vit = VitImageSplit(self.vit_transform(pil))
        if not generation:
            if not cfg.visual_und:
                raise ConfigError("this checkpoint has no vision encoder (visual_und=False): it cannot read images")
            return [vit], (pil.height, pil.width)
        splits: list[SplitSpec] = [VaeImageSplit(image=to_tensor(pil))]
        if cfg.visual_und:  # a generation-only model sees its input images through the VAE alone
            splits.append(vit)
        return splits, (pil.height, pil.width)

    def check_output_size(self, height: int, width: int) -> None:
        cfg = self.model.config
        stride = cfg.vae_image_stride
        limit = cfg.max_latent_size * stride
        for name, value in (("height", height), ("width", width)):
            if value < stride or value % stride:
                raise DataError(f"output {name}={value} must be a positive multiple of {stride} (the VAE stride)")
            if value > limit and not cfg.interpolate_pos:
                raise DataError(
                    f"output {name}={value} exceeds this model's latent position table ({cfg.max_latent_size} "
                    f"tokens x {stride} = {limit} pixels); choose at most {limit}"
                )

    # -- phases -----------------------------------------------------------------------------

    def run(self, requests: Sequence[Request], progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """Serve ``requests`` together; results in the same order."""
        plan = self.prepare(requests)
        self.decode_text(plan)
        self.generate_images(plan, progress)
        return plan.results

    @torch.no_grad()
    def prepare(self, requests: Sequence[Request]) -> Plan:
        """Build every request's contexts in one pool (phase 1)."""
        if any(r.makes_image for r in requests) and not self.model.config.visual_gen:
            plan = getattr(self.model, "load_plan", None)
            if plan is not None and plan.understanding_only:
                raise ConfigError(
                    'this model was loaded with components="understanding" (no generation weights): '
                    'load it with components="all" (--components all) to edit or generate images'
                )
            raise ConfigError(
                "this checkpoint has no generation weights (visual_gen=False): it can answer questions but "
                "cannot edit or generate images"
            )
        pool = ContextPool(self.model, self.special)
        jobs: list[_Job] = []
        queues: list[tuple[Context, deque]] = []
        for req in requests:
            seed = req.seed if req.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
            gen = req.makes_image
            job = _Job(req, seed, pool.new(), guidance=(req.guidance or self.config.preset(req.task)) if gen else None)
            full_ops: deque = deque()
            img_ops: deque = deque()
            if gen:
                job.cfg_img = pool.new()
            if req.think:
                system = self.text_split(self.config.think_prompts["generate" if gen else "understand"])
                full_ops.append(system)
                img_ops.append(system)
            items = req.inputs
            # cfg_text is full as it was before the latest text, or after the last image.
            fork_at = len(items) - 1 if isinstance(items[-1], str) else len(items)
            last_size = None
            for k, item in enumerate(items):
                if gen and k == fork_at:
                    full_ops.append(_Fork(job))
                if isinstance(item, str):
                    split = self.text_split(item)
                    full_ops.append(split)
                    img_ops.append(split)
                else:
                    splits, last_size = self.image_splits(item, gen)
                    full_ops.extend(splits)
                    if gen and job.strength < 1.0:
                        job.source = splits[0].image
            if gen:
                if fork_at == len(items):
                    full_ops.append(_Fork(job))
                height = req.height or (last_size[0] if last_size else self.default_size)
                width = req.width or (last_size[1] if last_size else self.default_size)
                self.check_output_size(height, width)
                job.size = (height, width)
                if job.strength < 1.0 and job.size != last_size:
                    raise DataError(
                        f"strength={job.strength:g} starts from the input image, so the output keeps its "
                        f"size {last_size[1]}x{last_size[0]}; leave height and width unset"
                    )
                queues.append((job.cfg_img, img_ops))
            queues.append((job.full, full_ops))
            jobs.append(job)
        # Rounds: the next block of every context, one forward per round.
        while True:
            contexts, splits = [], []
            for ctx, ops in queues:
                while ops and isinstance(ops[0], _Fork):
                    ops.popleft().job.cfg_text = pool.fork(ctx)
                if ops:
                    contexts.append(ctx)
                    splits.append(ops.popleft())
            if not contexts:
                break
            pool.add(contexts, splits)
        return Plan(pool, jobs)

    @torch.no_grad()
    def decode_text(self, plan: Plan) -> None:
        """Answers and thinking-mode reasoning, decoded together (phase 2)."""
        jobs = [j for j in plan.jobs if not j.request.makes_image or j.request.think]
        options = [
            TextOptions(
                j.request.max_new_tokens,
                j.request.temperature,
                j.request.top_p,
                torch.Generator().manual_seed(j.seed),
                j.request.on_token,
                j.request.stop,
            )
            for j in jobs
        ]
        generated = plan.pool.generate_text([j.full for j in jobs], options)
        reasoning_jobs, reasoning = [], []
        for job, ids in zip(jobs, generated):
            text = self.tokenizer.decode(ids)
            job.result.token_ids = ids
            job.result.prompt_tokens = plan.pool.length(job.full)
            job.result.seed = job.seed
            if job.request.makes_image:
                job.result.thinking = text.replace("<think>", "").replace("</think>", "").strip()
                reasoning_jobs.append(job)
                reasoning.append(TextSplit(ids, close=True))
            elif job.request.think:
                job.result.thinking, job.result.text = split_thinking(text)
            else:
                job.result.text = text
        # The reasoning joins the full context only: cfg_text and cfg_img stay without it.
        plan.pool.add([j.full for j in reasoning_jobs], reasoning)

    @torch.no_grad()
    def generate_images(self, plan: Plan, progress: Callable[[int, int], None] | None = None) -> None:
        """Denoise and decode the images (phase 3), one batch per distinct GuidanceConfig."""
        groups: dict[tuple, list[_Job]] = {}
        for job in plan.jobs:
            if job.request.makes_image:
                groups.setdefault((dataclasses.astuple(job.guidance), job.strength), []).append(job)
        stride = self.model.config.vae_image_stride
        for jobs in groups.values():
            grids = [(j.size[0] // stride, j.size[1] // stride) for j in jobs]
            velocity = GuidedVelocity(plan.pool, [(j.full, j.cfg_text, j.cfg_img) for j in jobs], grids)
            strength = jobs[0].strength
            start = torch.cat([self.initial_latents(j, g, plan.pool.device) for g, j in zip(grids, jobs)])
            latents, passes = sample(velocity, start, velocity.counts, jobs[0].guidance, progress, strength=strength)
            for job, image, count in zip(jobs, self.decode_latents(latents, grids), passes):
                job.result.image = image
                job.result.seed = job.seed
                job.result.model_passes = count
            del velocity

    def initial_noise(self, grid: tuple[int, int], seed: int) -> Tensor:
        """x ~ N(0, I) of shape (h*w, p*p*z), drawn on the CPU from the request's own seed."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(grid[0] * grid[1], self.model.config.patch_latent_dim, generator=generator)

    def initial_latents(self, job: _Job, grid: tuple[int, int], device: torch.device) -> Tensor:
        """Where the job's sampling starts, on ``device``: its noise at strength 1, else its input image's
        latent noised to the schedule's first time (SDEdit; :func:`unimedvl.sampling.flow.start_from_image`)."""
        noise = self.initial_noise(grid, job.seed).to(device)
        strength = job.strength
        if strength >= 1.0:
            return noise
        (latent,) = self.model.encode_images([job.source])
        return start_from_image(latent.to(device), noise, strength, job.guidance.timestep_shift)

    @torch.no_grad()
    def decode_latents(self, latents: Tensor, grids: Sequence[tuple[int, int]]) -> list[Image.Image]:
        """Packed latent tokens -> PIL images: unpatchify, VAE decode, (x * 0.5 + 0.5) * 255."""
        cfg = self.model.config
        parts = latents.split([h * w for h, w in grids])
        out: list[Image.Image | None] = [None] * len(grids)
        by_grid: dict[tuple[int, int], list[int]] = {}
        for i, grid in enumerate(grids):
            by_grid.setdefault(grid, []).append(i)
        for (h, w), indexes in by_grid.items():
            z = torch.stack(
                [unpatchify_latent(parts[i], h, w, cfg.latent_patch_size, cfg.vae.z_channels) for i in indexes]
            )
            pixels = self.model.vae.decode(z)
            for i, image in zip(indexes, pixels):
                out[i] = to_pil(image, rounding="truncate")  # the release's quantisation
        return out  # type: ignore[return-value]


def split_thinking(text: str) -> tuple[str, str]:
    """(reasoning, answer) from ``<think> ... </think> answer``; ("", text) without the tags."""
    if "</think>" not in text:
        return "", text.strip()
    reasoning, answer = text.split("</think>", 1)
    return reasoning.replace("<think>", "").strip(), answer.strip()
