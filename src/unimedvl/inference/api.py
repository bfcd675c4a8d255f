"""The Python API: ``from unimedvl import UniMedVL``.

::

    model = UniMedVL.from_pretrained("checkpoints/unimedvl")      # a directory (or a hub id)
    model.ask("chest.dcm", "Is there a pleural effusion?")          # -> str
    model.ask(image, "Describe the findings.", think=True)          # -> Answer(text, thinking)
    model.edit("ct_noisy.png", "Remove the noise.")                 # -> PIL image
    model.generate("An axial brain MRI, T2-weighted.", height=512, width=512)
    chat = model.chat(); chat.attach("cxr.png"); chat.ask("What is this?"); chat.ask("Where?")
    model.run([Request(...), Request(...)])                         # several requests, one batch

Images may be PIL images, numpy arrays (uint8, or floats in [0, 1]), [3, H, W] tensors in
[-1, 1], or paths (PNG, JPEG, TIFF, DICOM, NIfTI, .npy; ``scan.dcm#window=lung`` picks a window).

Return types: ``ask`` returns a ``str``, or an ``Answer`` (``.text``, ``.thinking``; ``str()``
gives the text) when ``think=True``. ``edit`` and ``generate`` return a PIL image, or an
``ImageAnswer`` (``.image``, ``.thinking``) when ``think=True``. Mistakes (unreadable image,
empty question, a checkpoint without generation weights asked to generate, ...) raise
``unimedvl.errors.UserError`` subclasses with a message that says what to change.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from unimedvl.checkpoint.inference_config import InferenceConfig
from unimedvl.checkpoint.memory_plan import PlanNotice
from unimedvl.checkpoint.release import load_model, parse_dtype
from unimedvl.defaults import MAX_NEW_TOKENS, TEMPERATURE, TOP_P
from unimedvl.errors import CheckpointError, DataError
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS
from unimedvl.inference.context import Context, ContextPool, TextOptions
from unimedvl.inference.inferencer import (
    ImageInput,
    Inferencer,
    Request,
    Result,
    load_input_image,
    split_thinking,
)
from unimedvl.models.packed_batch import TextSplit
from unimedvl.tokenizer import Tokenizer

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Answer:
    """A thinking-mode answer: the final text and the reasoning before it."""

    text: str
    thinking: str

    def __str__(self) -> str:
        return self.text


@dataclass
class ImageAnswer:
    """A thinking-mode image result: the image and the reasoning that preceded it."""

    image: Image.Image
    thinking: str


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """A local checkpoint directory; a hub id is downloaded only when online (HF_HUB_OFFLINE unset)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: is a file; pass the checkpoint directory")
    text = str(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")
    if not _HUB_ID.match(text):
        raise CheckpointError(f"{text}: checkpoint directory not found")
    if offline:
        raise CheckpointError(
            f"{text}: no such directory, and HF_HUB_OFFLINE is set so it is not looked up on the Hugging Face "
            "hub: pass a local checkpoint directory or unset HF_HUB_OFFLINE"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text))
    except Exception as err:  # network, auth, unknown repo: the hub raises many types; keep the cause
        raise CheckpointError(f"{text}: not a local directory and the hub download failed ({err})") from err


# Keyword names of earlier releases -> today's (one spelling everywhere; the old ones warn).
_OLD_SIZE_NAMES = {
    "min_image_size": "vae_min_size",
    "max_image_size": "vae_max_size",
    "vit_min_image_size": "vit_min_size",
    "vit_max_image_size": "vit_max_size",
}


def _size_arguments(sizes: dict, deprecated: dict) -> dict:
    for old, value in deprecated.items():
        if old not in _OLD_SIZE_NAMES:
            raise TypeError(f"from_pretrained() got an unexpected keyword argument {old!r}")
        warnings.warn(
            f"from_pretrained({old}=...) is deprecated; use {_OLD_SIZE_NAMES[old]}=...", FutureWarning, stacklevel=3
        )
        if value is not None and sizes[_OLD_SIZE_NAMES[old]] is None:
            sizes[_OLD_SIZE_NAMES[old]] = value
    return sizes


class UniMedVL:
    """A loaded model with ask / edit / generate / chat (see the module docstring)."""

    def __init__(self, inferencer: Inferencer, memory_notice: str | None = None):
        self.inferencer = inferencer
        self.memory_notice = memory_notice  # which plan max_memory chose (from_pretrained), else None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        vae_min_size: int | None = None,
        vae_max_size: int | None = None,
        vit_min_size: int | None = None,
        vit_max_size: int | None = None,
        max_pixels: int | None = None,
        prefer: str = "ema",
        config: InferenceConfig | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        components: str = "all",
        quantize: str | None = None,
        offload: str | None = None,
        device_map: str | None = None,
        max_memory: str | int | None = None,
        adapter: str | os.PathLike[str] | None = None,
        **deprecated: int | None,
    ) -> UniMedVL:
        """Load a checkpoint directory (or hub id). device: cuda if available, else cpu; dtype: bf16 on
        cuda, fp32 on cpu. Images are fed the way the checkpoint's ``inference_config.json`` says (the
        release's sizes without one); ``vae_*`` / ``vit_*`` / ``max_pixels`` override it: the VAE resize
        rule applied to every input image (512 for quality, 256 for speed) and the ViT transform after it.
        ``config`` replaces the checkpoint's inference config altogether (the size arguments still apply);
        ``max_image_pixels``: image files with more pixels are refused before decoding (default 16384 x 16384).

        Memory (:mod:`unimedvl.checkpoint.memory_plan`): ``components="understanding"`` loads the understanding
        tower, ViT and connector only (about 55% of the release; generation requests are refused);
        ``quantize="int8"`` (CPU, CUDA) or ``"nf4"`` (CUDA) quantises the large Linear layers as they
        load; ``offload="cpu"`` streams the decoder layers from host memory to the GPU; ``device_map``
        (``"auto"``, ``"balanced"`` or JSON such as ``'{"0-13": "cuda:0", "14-27": "cuda:1"}'``) spreads
        them over GPUs. ``max_memory="24GB"`` picks the cheapest plan that fits (a PlanNotice says which).

        ``adapter``: a LoRA run's step directory whose adapters are applied to this base (checked by its
        fingerprint; any memory plan). A LoRA step directory given as ``name_or_path`` loads the base it
        names plus its adapter (:mod:`unimedvl.checkpoint.adapters`).
        """
        from unimedvl.checkpoint.adapters import adapter_base, is_adapter_dir
        from unimedvl.checkpoint.loading import resolve_load
        from unimedvl.checkpoint.memory_plan import default_dtype

        sizes = _size_arguments(
            dict(
                vae_min_size=vae_min_size,
                vae_max_size=vae_max_size,
                vit_min_size=vit_min_size,
                vit_max_size=vit_max_size,
                max_pixels=max_pixels,
            ),
            deprecated,
        )
        path = resolve_checkpoint(name_or_path)
        if adapter is None and is_adapter_dir(path):
            path, adapter = adapter_base(path), path
        if adapter is not None:
            adapter_base(adapter, path)  # refused before loading when it belongs to another base
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = parse_dtype(dtype or default_dtype(device))
        trained = adapter is not None and (Path(adapter) / "inference_config.json").is_file()
        config = (config or InferenceConfig.load(adapter if trained else path)).with_sizes(**sizes)
        _, plan, notice = resolve_load(
            path,
            config,
            device,
            dtype,
            components=components,
            quantize=quantize,
            offload=offload,
            device_map=device_map,
            max_memory=max_memory,
        )
        if notice:
            warnings.warn(notice, PlanNotice, stacklevel=2)
        model = load_model(path, dtype=dtype, device=device, prefer=prefer, plan=plan)
        if adapter is not None:
            from unimedvl.checkpoint.adapters import attach_adapter

            attach_adapter(model, adapter, path, weights=prefer)
        tokenizer = Tokenizer.from_dir(path)
        return cls(Inferencer(model, tokenizer, config=config, max_image_pixels=max_image_pixels), memory_notice=notice)

    @property
    def model(self):
        return self.inferencer.model

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inferencer.tokenizer

    # -- one request each -------------------------------------------------------------------

    def ask(
        self,
        images: ImageInput | Sequence[ImageInput] | None,
        question: str,
        *,
        think: bool = False,
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        seed: int | None = None,
    ) -> str | Answer:
        """Answer ``question`` about the image(s) (None for a text-only question). Greedy by default.

        A question that refers to an image ("this scan", "the X-ray shown") asked without one is
        answered, with a UserWarning (:func:`missing_image_warning`): the model would be guessing.
        """
        _check_text(question, "question")
        loaded = _images(images)
        notice = missing_image_warning(len(loaded), question)
        if notice:
            warnings.warn(notice, UserWarning, stacklevel=2)
        request = Request(loaded + [question], "understand", think, max_new_tokens, temperature, top_p, seed=seed)
        result = self.inferencer.run([request])[0]
        return Answer(result.text, result.thinking) if think else result.text

    def edit(
        self,
        image: ImageInput | Sequence[ImageInput],
        instruction: str,
        *,
        think: bool = False,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_think_tokens: int = MAX_NEW_TOKENS,
        strength: float | None = None,
        preset: str | None = None,
        **guidance,
    ) -> Image.Image | ImageAnswer:
        """Edit an image following ``instruction``; output size = the input's size after the VAE rule.

        ``guidance``: any GuidanceConfig field (cfg_text_scale, cfg_img_scale, cfg_interval,
        cfg_renorm_type, cfg_renorm_min, timestep_shift, num_timesteps, and the fast-sampling
        solver, cache, cache_threshold, cache_interval, cache_order, cache_warmup: see
        unimedvl.sampling); the rest keep the checkpoint's editing preset (release: 4.0, 2.0,
        [0, 1], text_channel, 0, 3.0, 50, Euler, no cache).

        ``strength`` (SDEdit; None: the editing preset's, 1 for the release, the evaluated strength for a
        demo checkpoint): 1 samples from pure noise, the reference behaviour; below 1 sampling
        starts from the (last) input image's latent noised to t = shift(strength) and runs only that
        part of the schedule (about ``strength * num_timesteps`` steps). Lower keeps more of the
        input (its anatomy, its intensities) and is faster, but can change it less: good for
        restoration by a small model, less so for edits that redraw the image.

        ``preset``: another of the checkpoint's presets to start from, e.g. ``"editing_fast"`` (its fast
        variant, when it carries one: ``InferenceConfig.preset_names("edit")``); ``guidance`` still applies.
        """
        _check_text(instruction, "instruction")
        images = _images(image)
        if not images:
            raise DataError("edit needs an input image")
        request = Request(
            images + [instruction],
            "edit",
            think,
            max_think_tokens,
            height=height,
            width=width,
            guidance=self.inferencer.config.guidance_for("edit", guidance, preset),
            seed=seed,
            strength=strength,
        )
        return _image_out(self.inferencer.run([request], progress)[0], think)

    def generate(
        self,
        prompt: str,
        *,
        height: int | None = None,
        width: int | None = None,
        think: bool = False,
        seed: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_think_tokens: int = MAX_NEW_TOKENS,
        preset: str | None = None,
        **guidance,
    ) -> Image.Image | ImageAnswer:
        """Generate an image from ``prompt`` (default size: the largest side the checkpoint is fed, 1024 for the
        release).

        ``guidance`` overrides the checkpoint's text-to-image preset (release: 4.0, 1.0, [0.4, 1], global, 0,
        3.0, 50); ``preset`` starts from another of its presets instead (e.g. ``"text_to_image_fast"``).
        """
        _check_text(prompt, "prompt")
        request = Request(
            [prompt],
            "generate",
            think,
            max_think_tokens,
            height=height,
            width=width,
            guidance=self.inferencer.config.guidance_for("generate", guidance, preset),
            seed=seed,
        )
        return _image_out(self.inferencer.run([request], progress)[0], think)

    def run(self, requests: Sequence[Request], progress: Callable[[int, int], None] | None = None) -> list[Result]:
        """Serve several requests in one batch: the same tokens as one by one (given their seeds), images
        equal to fp32 round-off (at most one grey level on a few pixels)."""
        return self.inferencer.run(requests, progress)

    def chat(self, think: bool = False) -> ChatSession:
        """A multi-turn conversation about images (understanding)."""
        return ChatSession(self.inferencer, think)


class ChatSession:
    """A multi-turn conversation on one KV-cache context: attach images, ask, reset.

    The context always equals [thinking prompt if ``think``] + the turns so far; switching
    ``think`` replays the turns into a fresh context.
    """

    def __init__(self, inferencer: Inferencer, think: bool = False):
        self.inferencer = inferencer
        self._think = think
        self.turns: list[tuple[str, object]] = []  # ("image", PIL) | ("user", str) | ("assistant", ids)
        self.attach_hint = "chat.attach(image)"  # how the no-image warning says to attach one (the CLI: /image)
        self._rebuild()

    @property
    def think(self) -> bool:
        return self._think

    @think.setter
    def think(self, value: bool) -> None:
        if bool(value) != self._think:
            self._think = bool(value)
            self._rebuild()

    def reset(self) -> None:
        """Forget every turn and image."""
        self.turns = []
        self._rebuild()

    @property
    def context_length(self) -> int:
        """Tokens in the conversation's context."""
        return self.pool.length(self.context)

    def attach(self, image: ImageInput) -> None:
        """Add an image to the conversation (read through the ViT, after the VAE resize rule)."""
        pil = load_input_image(image, self.inferencer.max_image_pixels)  # read once: a replay reuses it
        self.pool.add([self.context], self.inferencer.image_splits(pil, generation=False)[0])
        self.turns.append(("image", pil))

    def ask(
        self,
        question: str,
        *,
        max_new_tokens: int = MAX_NEW_TOKENS,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        seed: int | None = None,
    ) -> str | Answer:
        """Ask within the conversation; the answer joins the context for later turns."""
        _check_text(question, "question")
        notice = missing_image_warning(sum(kind == "image" for kind, _ in self.turns), question, self.attach_hint)
        if notice:
            warnings.warn(notice, UserWarning, stacklevel=2)
        self.pool.add([self.context], [self.inferencer.text_split(question)])
        self.turns.append(("user", question))
        generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, ())))
        (ids,) = self.pool.generate_text([self.context], [TextOptions(max_new_tokens, temperature, top_p, generator)])
        self._add_answer(ids)
        text = self.inferencer.tokenizer.decode(ids)
        if not self._think:
            return text
        thinking, answer = split_thinking(text)
        return Answer(answer, thinking)

    def _add_answer(self, ids: list[int]) -> None:
        self.pool.add([self.context], [TextSplit(ids, close=True)])
        self.turns.append(("assistant", ids))

    def _rebuild(self) -> None:
        self.pool = ContextPool(self.inferencer.model, self.inferencer.special)
        self.context: Context = self.pool.new()
        if self._think:
            self.pool.add([self.context], [self.inferencer.text_split(self.inferencer.think_prompts["understand"])])
        for kind, value in self.turns:
            if kind == "image":
                self.pool.add([self.context], self.inferencer.image_splits(value, generation=False)[0])
            elif kind == "user":
                self.pool.add([self.context], [self.inferencer.text_split(value)])
            else:
                self.pool.add([self.context], [TextSplit(list(value), close=True)])


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"the {what} is empty; pass a non-empty string")


# "this scan", "the image", "the X-ray shown": a question about an image that must be given.
_IMAGE_REFERENCE = re.compile(
    r"\b(this|these|the|attached|above|given|following|uploaded)\s+(images?|scans?|pictures?|photos?|photographs?|"
    r"slides?|x-?rays?|radiographs?|films?|ct|mri|studies|study|views?|slices?|frames?)\b|"
    r"\b(shown|pictured|depicted|in the (image|picture|scan))\b",
    re.IGNORECASE,
)


def missing_image_warning(
    num_images: int, question: str, attach: str = "--image FILE, or images= in the API"
) -> str | None:
    """The one-line notice for a question that refers to an image when no image was given (else None);
    ``attach`` says how to give one where the question was asked."""
    if num_images or not _IMAGE_REFERENCE.search(question):
        return None
    return f"the question refers to an image but no image was given, so the answer is a guess; attach one ({attach})"


def _images(images: ImageInput | Sequence[ImageInput] | None) -> list[ImageInput]:
    """The images as Request inputs: a str here is a path (in a Request's inputs a str is a text), so it
    becomes a Path; files are read by the inferencer, which knows the size it resizes them to."""
    if images is None:
        return []
    if not isinstance(images, (list, tuple)):
        images = [images]
    return [Path(image) if isinstance(image, str) else image for image in images]


def _image_out(result: Result, think: bool) -> Image.Image | ImageAnswer:
    return ImageAnswer(result.image, result.thinking or "") if think else result.image


__all__ = [
    "Answer",
    "ChatSession",
    "ImageAnswer",
    "Request",
    "Result",
    "UniMedVL",
    "missing_image_warning",
    "resolve_checkpoint",
]
