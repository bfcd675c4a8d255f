"""Request bodies of the OpenAI routes (pydantic), with our extension fields.

Field names follow OpenAI's API; extension fields (``think``, ``seed`` on images, the
:class:`~unimedvl.guidance.GuidanceConfig` names) sit at the top level of the body, which is
where the official client puts ``extra_body``. Unknown fields are accepted and ignored, as
OpenAI-compatible servers do (clients send ``user``, ``stream_options``, ``store`` ...);
fields whose meaning this server cannot honour are refused by the routes instead.
"""

from __future__ import annotations

import json
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from unimedvl.defaults import TEMPERATURE, TOP_P
from unimedvl.guidance import GUIDANCE_FIELDS, GuidanceConfig


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


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


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
    temperature: float = Field(TEMPERATURE, ge=0.0, le=2.0)  # 0 (the default here): greedy
    top_p: float = Field(TOP_P, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**62)  # choice i uses seed + i; same seed -> same answer
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    think: bool = False  # extension: reason first; the reasoning comes back as reasoning_content
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None


class _GuidanceFieldsBase(_Lenient):
    """What the generated :class:`GuidanceFields` share: the interval's text forms and the overrides."""

    @field_validator("cfg_interval", mode="before", check_fields=False)
    @classmethod
    def _interval_text(cls, value: Any) -> Any:
        if isinstance(value, str):  # multipart fields are strings: "[0.4, 1]" or "0.4,1"
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [part.strip() for part in text.split(",")]
        return value

    def guidance_overrides(self) -> dict[str, Any]:
        """The guidance fields the request gave (the ``overrides`` of ``InferenceConfig.guidance_for``)."""
        return {name: getattr(self, name) for name in GUIDANCE_FIELDS if getattr(self, name) is not None}


def _guidance_fields() -> dict[str, Any]:
    """One optional field per GuidanceConfig field, of its type (None keeps the preset's value): never typed here,
    so a new sampler setting reaches the HTTP API with the dataclass. GuidanceConfig checks the values."""
    hints = typing.get_type_hints(GuidanceConfig)
    return {name: (hints[name] | None, None) for name in GUIDANCE_FIELDS}


# Extension fields: the GuidanceConfig knobs (cfg_text_scale, ..., num_timesteps, the fast-sampling solver and
# cache settings, strength for edits); cfg_interval is JSON [lo, hi], in a form also "lo,hi".
GuidanceFields = create_model("GuidanceFields", __base__=_GuidanceFieldsBase, __module__=__name__, **_guidance_fields())


class ImageRequest(GuidanceFields):  # type: ignore[misc, valid-type]
    """``POST /v1/images/generations`` (JSON) and the text fields of ``/v1/images/edits`` (multipart)."""

    preset: str | None = None  # extension: the checkpoint's preset to start from, e.g. editing_fast (GET /v1/models)
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None  # "WIDTHxHEIGHT" or "auto" (edits: the input's size; generations: the default)
    seed: int | None = Field(None, ge=0, le=2**62)  # extension: image i uses seed + i
    response_format: str | None = None  # b64_json only (nothing is stored on the server)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    mask: Any = None  # refused: masked edits are not supported
