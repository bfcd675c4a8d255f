"""What the app's buttons do, without gradio: read uploads, call the model, write result files.

One :class:`Backend` per app holds the model and the app's folders; it keeps no user data. Each
browser session's conversation lives in a :class:`Conversation` that the UI stores in that
session's ``gr.State``. Mistakes raise :class:`~unimedvl.errors.UserError` subclasses; the UI turns
them into messages on the page.
"""

from __future__ import annotations

import dataclasses
import os
import time
import unicodedata
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from unimedvl.app.presets import AppSettings
from unimedvl.app.uploads import ViewOptions, check_upload, describe, load_view
from unimedvl.checkpoint.inference_config import InferenceConfig
from unimedvl.errors import DataError
from unimedvl.guidance import GuidanceConfig

THUMBNAIL = 256  # longest side of the image copies shown in the chat
OUTPUT_TTL_S = 3600  # result files older than this are deleted when a new one is written


@dataclass
class Conversation:
    """One session's chat: the model's ChatSession, the image it saw last, and the messages shown."""

    session: object  # unimedvl.inference.api.ChatSession
    image_key: tuple | None = None  # (path, view options) of the image attached last
    messages: list[dict] = field(default_factory=list)  # gr.Chatbot messages


@dataclass
class ImageResult:
    """An edit or generate result: the image, its PNG file (download), the reasoning, a summary."""

    image: Image.Image
    png: Path
    thinking: str
    info: str


class Backend:
    """The model plus the folders the app reads from and writes to (see the module docstring)."""

    def __init__(
        self,
        model,
        settings: AppSettings,
        upload_roots: Sequence[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str],
    ):
        self.model = model  # unimedvl.inference.api.UniMedVL
        self.settings = settings
        self.upload_roots = [Path(r) for r in upload_roots]
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    # -- guidance ----------------------------------------------------------------------------

    @property
    def inference_config(self) -> InferenceConfig:
        """The loaded checkpoint's inference_config.json (its presets: what the panels start from)."""
        return self.model.inferencer.config

    def guidance(self, task: str, *panel, preset: str | None = None) -> GuidanceConfig:
        """:func:`make_guidance` on the loaded checkpoint's presets."""
        return make_guidance(task, *panel, config=self.inference_config, preset=preset)

    def panel_values(
        self, task: str, preset: str | None = None, guidance: GuidanceConfig | None = None
    ) -> dict[str, Any]:
        """What the Advanced panel (and the Edit tab's strength slider) show for the checkpoint's preset of ``task``
        (or the chosen ``preset``, or ``guidance`` itself), named as the app's edit/generate parameters, in the
        panel's order; the app's --num-timesteps, when given, replaces the steps."""
        g = guidance or self.inference_config.guidance_for(task, preset=preset or None)
        values = dict(
            cfg_text=g.cfg_text_scale,
            cfg_img=g.cfg_img_scale,
            interval_lo=g.cfg_interval[0],
            interval_hi=g.cfg_interval[1],
            renorm_type=g.cfg_renorm_type,
            renorm_min=g.cfg_renorm_min,
            shift=g.timestep_shift,
            num_timesteps=self.settings.num_timesteps or g.num_timesteps,
            solver=g.solver,
            cache=g.cache,
            cache_threshold=g.cache_threshold,
            cache_interval=g.cache_interval,
        )
        return {**values, "strength": g.strength} if task == "edit" else values

    # -- inputs ------------------------------------------------------------------------------

    def read(self, file: str | None, view: ViewOptions):
        """(checked path, decoded LoadedImage) of an upload."""
        path = check_upload(file, self.upload_roots)
        return path, load_view(path, view, self.settings.max_image_pixels)

    def preview(self, file: str | None, view: ViewOptions) -> tuple[Image.Image, str, dict]:
        """The image the model will see, a one-line description and the reader's facts (meta)."""
        path, loaded = self.read(file, view)
        meta = {"kind": loaded.kind, **loaded.meta}
        return loaded.to_pil(), describe(loaded, path.name), meta

    # -- outputs -----------------------------------------------------------------------------

    def _write_png(self, image: Image.Image, stem: str) -> Path:
        now = time.time()
        for old in self.out_dir.glob("*.png"):  # result files are fetched right away; keep the folder small
            try:
                if now - old.stat().st_mtime > OUTPUT_TTL_S:
                    old.unlink()
            except FileNotFoundError:  # another request removed it first
                pass
        path = self.out_dir / f"{stem}-{uuid.uuid4().hex[:10]}.png"
        image.save(path, format="PNG")
        return path

    # -- the three tasks ---------------------------------------------------------------------

    def ask(
        self,
        conversation: Conversation | None,
        file: str | None,
        view: ViewOptions,
        question: str,
        think: bool,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> tuple[Conversation, str, str]:
        """Ask within this session's conversation; the image joins it when it is new or changed."""
        if not question or not question.strip():
            raise DataError("the question is empty: pick a task or type a question")
        if conversation is None:
            conversation = Conversation(self.model.chat(think=bool(think)))
        session = conversation.session
        session.think = bool(think)
        if file:
            path, loaded = self.read(file, view)
            key = (str(path), view)
            if key != conversation.image_key:
                pil = loaded.to_pil()
                session.attach(pil)
                conversation.image_key = key
                thumb = pil.copy()
                thumb.thumbnail((THUMBNAIL, THUMBNAIL))
                conversation.messages.append({"role": "user", "content": {"path": str(self._write_png(thumb, "chat"))}})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            answer = session.ask(
                question.strip(),
                max_new_tokens=int(max_new_tokens),
                temperature=float(temperature),
                top_p=float(top_p),
                seed=int(seed),
            )
        text, thinking = (answer.text, answer.thinking) if session.think else (answer, "")
        text, thinking = printable(text), printable(thinking)
        conversation.messages.append({"role": "user", "content": question.strip()})
        if thinking:
            conversation.messages.append({"role": "assistant", "content": thinking, "metadata": {"title": "Reasoning"}})
        conversation.messages.append({"role": "assistant", "content": text or "(empty answer)"})
        for notice in caught:  # e.g. an image question without an image: shown next to the answer
            conversation.messages.append(
                {"role": "assistant", "content": f"Note: {notice.message}", "metadata": {"title": "Warning"}}
            )
        return conversation, text, thinking

    def edit(
        self,
        file: str | None,
        view: ViewOptions,
        instruction: str,
        think: bool,
        guidance: GuidanceConfig,
        seed: int,
        progress: Callable[[int, int], None] | None = None,
        strength: float = 1.0,
    ) -> ImageResult:
        """Edit the uploaded image following ``instruction`` (``strength`` < 1: start from the noised input)."""
        if not instruction or not instruction.strip():
            raise DataError("the instruction is empty: pick a preset or type what to change")
        path, loaded = self.read(file, view)
        start = time.perf_counter()
        result = self.model.edit(
            loaded.to_pil(),
            instruction.strip(),
            think=bool(think),
            seed=int(seed),
            progress=progress,
            strength=float(strength),
            **_guidance_kwargs(guidance),
        )
        return self._image_result(result, think, f"edit-{Path(path.name).stem[:40]}", seed, guidance, start, strength)

    def generate(
        self,
        prompt: str,
        height: int,
        width: int,
        think: bool,
        guidance: GuidanceConfig,
        seed: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImageResult:
        """Generate an image from ``prompt``."""
        if not prompt or not prompt.strip():
            raise DataError("the prompt is empty: describe the image to generate")
        start = time.perf_counter()
        result = self.model.generate(
            prompt.strip(),
            height=int(height),
            width=int(width),
            think=bool(think),
            seed=int(seed),
            progress=progress,
            **_guidance_kwargs(guidance),
        )
        return self._image_result(result, think, "generated", seed, guidance, start)

    def _image_result(
        self, result, think: bool, stem: str, seed: int, guidance: GuidanceConfig, start: float, strength: float = 1.0
    ) -> ImageResult:
        image, thinking = (result.image, result.thinking or "") if think else (result, "")
        thinking = printable(thinking)
        png = self._write_png(image, "".join(c if c.isalnum() or c in "-_" else "_" for c in stem))
        info = (
            f"{image.width}x{image.height} px | seed {seed} | {guidance.num_timesteps} timesteps | "
            + (f"strength {strength:g} | " if strength < 1 else "")
            + (f"{guidance.solver} solver | " if guidance.solver != "euler" else "")
            + (f"{guidance.cache} cache | " if guidance.cache != "none" else "")
            + f"cfg text {guidance.cfg_text_scale:g}, image {guidance.cfg_img_scale:g} | "
            f"{time.perf_counter() - start:.1f} s"
        )
        return ImageResult(image, png, thinking, info)


def printable(text: str) -> str:
    """``text`` without control characters other than newline and tab (they render as boxes)."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def make_guidance(
    task: str,
    cfg_text: float,
    cfg_img: float,
    interval_lo: float,
    interval_hi: float,
    renorm_type: str,
    renorm_min: float,
    shift: float,
    num_timesteps: int,
    solver: str = "euler",
    cache: str = "none",
    cache_threshold: float = 0.1,
    cache_interval: int = 3,
    *,
    config: InferenceConfig | None = None,
    preset: str | None = None,
) -> GuidanceConfig:
    """The Advanced panel's values over the checkpoint's preset for ``task`` (or the chosen ``preset``, e.g.
    ``editing_fast``): ``config`` is the loaded checkpoint's InferenceConfig (None: the release's). The merge is
    :meth:`InferenceConfig.guidance_for`, as in ``edit``, ``api`` and ``eval``; GuidanceConfig checks the values."""
    try:
        panel = dict(
            cfg_text_scale=float(cfg_text),
            cfg_img_scale=float(cfg_img),
            cfg_interval=(float(interval_lo), float(interval_hi)),
            cfg_renorm_type=str(renorm_type),
            cfg_renorm_min=float(renorm_min),
            timestep_shift=float(shift),
            num_timesteps=int(num_timesteps),
            solver=str(solver),
            cache=str(cache),
            cache_threshold=float(cache_threshold),
            cache_interval=int(cache_interval),
        )
    except (TypeError, ValueError) as err:
        raise DataError(f"advanced settings: {err}") from None
    return (config or InferenceConfig()).guidance_for(task, panel, preset or None)


def _guidance_kwargs(guidance: GuidanceConfig) -> dict:
    """The panel's guidance as keyword arguments; the strength travels on its own (the Edit tab's slider)."""
    return {k: v for k, v in dataclasses.asdict(guidance).items() if k != "strength"}
