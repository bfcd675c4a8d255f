"""Request bodies of the OpenAI routes (pydantic), with our extension fields.

Field names follow OpenAI's API; extension fields (``think``, ``seed`` on images, the
:class:`~unimedvl.guidance.GuidanceConfig` names) sit at the top level of the body, which is
where the official client puts ``extra_body``. Unknown fields are accepted and ignored, as
OpenAI-compatible servers do (clients send ``user``, ``stream_options``, ``store`` ...);
fields whose meaning this server cannot honour are refused by the routes instead.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Lenient):
    """A text part of a chat message's content list."""

    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    """The image of an ``image_url`` part: a base64 data URL (the server reads no remote URLs)."""

    url: str  # a base64 data URL
    detail: str | None = None  # accepted, not used (the server's size rules decide)


class ImagePart(_Lenient):
    """An image part of a chat message's content list."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(_Lenient):
    """One chat turn."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    """Options of a streamed answer (``stream_options``)."""

    include_usage: bool = False  # one more chunk before [DONE] with the usage


class ChatRequest(_Lenient):
    """``POST /v1/chat/completions``."""

    model: str | None = None  # not checked: the server serves one model
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)  # answer length limit (reasoning included in thinking mode)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name; the smaller of the two wins
    temperature: float = Field(0.0, ge=0.0, le=2.0)  # 0 (the default here): greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**62)  # choice i uses seed + i; same seed -> same answer
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    think: bool = False  # extension: reason first; the reasoning comes back as reasoning_content
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None


class GuidanceFields(_Lenient):
    """Extension fields: the GuidanceConfig knobs (None keeps the task's preset)."""

    cfg_text_scale: float | None = None
    cfg_img_scale: float | None = None
    cfg_interval: tuple[float, float] | None = None  # JSON [lo, hi]; in a form also "lo,hi"
    cfg_renorm_type: str | None = None
    cfg_renorm_min: float | None = None
    timestep_shift: float | None = None
    num_timesteps: int | None = Field(None, ge=2)
    solver: str | None = None  # fast sampling (unimedvl.sampling): euler | heun | dpm++2m
    cache: str | None = None  # none | teacache | taylorseer
    cache_threshold: float | None = None
    cache_interval: int | None = None
    cache_order: int | None = None
    cache_warmup: int | None = None

    @field_validator("cfg_interval", mode="before")
    @classmethod
    def _interval_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # multipart fields are strings: "[0.4, 1]" or "0.4,1"
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")]
        return value

    def guidance_overrides(self) -> dict[str, Any]:
        """The guidance fields the client set, to merge over the task's preset."""
        return {name: getattr(self, name) for name in GuidanceFields.model_fields if getattr(self, name) is not None}


class ImageRequest(GuidanceFields):
    """``POST /v1/images/generations`` (JSON) and the text fields of ``/v1/images/edits`` (multipart)."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None  # "WIDTHxHEIGHT" or "auto" (edits: the input's size; generations: the default)
    seed: int | None = Field(None, ge=0, le=2**62)  # extension: image i uses seed + i
    response_format: str | None = None  # b64_json only (nothing is stored on the server)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    mask: Any = None  # refused: masked edits are not supported
