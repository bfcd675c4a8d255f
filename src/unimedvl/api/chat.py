"""``POST /v1/chat/completions``: questions about images, whole or streamed token by token.

The messages are the conversation: every message becomes one text block of the context (a
user message's images go in where they stand among its text), in order, and the model answers
the last one, which must be the user's. This rebuilds the context a :class:`ChatSession` would
hold after the same turns. ``n`` choices are ``n`` requests of the batch, choice ``i`` with
seed ``seed + i``. Thinking mode (``"think": true``) adds the reasoning as
``message.reasoning_content`` (:mod:`unimedvl.api.answers`).

A last question that refers to an image ("this scan") in a conversation without one is answered,
with the extension field ``warning`` saying the answer is a guess (and a line in the server log).

Streaming sends ``data: {chat.completion.chunk}`` events as tokens are decoded: first a role
delta per choice, then content (and reasoning) deltas, then an empty delta with the
``finish_reason``; with ``stream_options.include_usage`` one more chunk with the usage; then
``data: [DONE]``. A failure after the headers went out is sent as ``data: {"error": ...}``,
which the official client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from unimedvl.api.answers import CONTENT, AnswerStream, split_answer
from unimedvl.api.batcher import ClientGone, Ticket
from unimedvl.api.errors import bad_request
from unimedvl.api.schemas import ChatRequest, ImagePart, Message
from unimedvl.api.service import Service, as_api_error
from unimedvl.api.settings import ServerSettings
from unimedvl.api.uploads import image_from_data_url
from unimedvl.inference.api import missing_image_warning
from unimedvl.inference.inferencer import Request, Result

KEEPALIVE_S = 15.0  # an SSE comment this often while a streamed request waits (proxies drop idle streams)
CLIENT_GONE = 499  # the status recorded for a client that left before its answer (nobody receives it)


class TicketStream(StreamingResponse):
    """An SSE response that cancels its ticket however it ends (done, client gone, server stopping).

    A generator's ``finally`` is not enough: a client that leaves before the first chunk is sent
    cancels the response before the generator ever starts.
    """

    def __init__(self, content: AsyncIterator[str], ticket: Ticket):
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.ticket = ticket

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.ticket.cancel()


def check_supported(body: ChatRequest, settings: ServerSettings) -> int:
    """Refuse what this server cannot honour; returns the max_tokens to use."""
    if body.stop:
        raise bad_request(
            "stop sequences are not supported; leave stop out (an answer ends at the model's "
            "end-of-turn token or at max_tokens)",
            "stop",
        )
    if body.tools:
        raise bad_request("tools (function calling) are not supported by this model; leave tools out", "tools")
    if body.logprobs:
        raise bad_request("logprobs are not supported; leave logprobs out", "logprobs")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise bad_request('only response_format {"type": "text"} is supported', "response_format")
    if body.n > settings.max_n:
        raise bad_request(f"n={body.n} is more than this server allows ({settings.max_n})", "n")
    asked = [v for v in (body.max_tokens, body.max_completion_tokens) if v is not None]
    max_tokens = min(asked) if asked else settings.default_max_tokens
    if max_tokens > settings.max_tokens:
        raise bad_request(
            f"max_tokens={max_tokens} is more than this server allows ({settings.max_tokens}); ask for "
            f"at most {settings.max_tokens}",
            "max_tokens",
            "max_tokens_too_large",
        )
    return max_tokens


def chat_inputs(messages: list[Message], settings: ServerSettings) -> list:
    """The Request inputs of a conversation: one text per message, images where they stand."""
    if messages[-1].role != "user":
        raise bad_request(
            f"the last message is the {messages[-1].role}'s; end with a user message (the model answers it)",
            f"messages[{len(messages) - 1}].role",
        )
    parts = [p for m in messages if isinstance(m.content, list) for p in m.content]
    count = sum(isinstance(p, ImagePart) for p in parts)
    if count > settings.max_images:
        raise bad_request(
            f"{count} images is more than this server accepts per request ({settings.max_images})", "messages"
        )
    inputs: list = []
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        content = message.content
        if isinstance(content, str):
            content_parts: list = [content]
        else:
            content_parts = list(content or [])
        if not content_parts:
            raise bad_request(f"{where} has no content", f"{where}.content")
        text: list[str] = []  # adjacent text parts of a message form one block
        for p, part in enumerate(content_parts):
            if isinstance(part, str) or part.type == "text":
                value = part if isinstance(part, str) else part.text
                if not value.strip():
                    raise bad_request(
                        f"{where}.content[{p}] is an empty text; remove it or write something", f"{where}.content"
                    )
                text.append(value)
                continue
            if message.role != "user":
                raise bad_request(f"{where}: only user messages may carry images", f"{where}.content[{p}]")
            if text:
                inputs.append("\n".join(text))
                text = []
            place = f"{where}.content[{p}].image_url"
            inputs.append(image_from_data_url(part.image_url.url, settings.max_image_pixels, place))
        if text:
            inputs.append("\n".join(text))
    return inputs


def no_image_notice(inputs: list) -> str | None:
    """The warning for a conversation whose last question refers to an image ("this scan") when it has none;
    logged, and returned to the client as the extension field ``warning``."""
    notice = missing_image_warning(
        sum(not isinstance(item, str) for item in inputs), inputs[-1], "an image_url part in the user message"
    )
    if notice:
        logging.getLogger("unimedvl.api").warning(notice)
    return notice


def _finish_reason(result: Result, max_tokens: int) -> str:
    return "length" if len(result.token_ids) >= max_tokens else "stop"


def _usage(results: list[Result]) -> dict:
    prompt = results[0].prompt_tokens if results else 0  # the choices share one prompt
    completion = sum(len(r.token_ids) for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(
    service: Service, results: list[Result], think: bool, max_tokens: int, cid: str, created: int
) -> dict:
    """The ``chat.completion`` object."""
    decode = service.inferencer.tokenizer.decode
    choices = []
    for index, result in enumerate(results):
        fields = split_answer(decode(result.token_ids), think)
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", **fields},
                "finish_reason": _finish_reason(result, max_tokens),
            }
        )
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": service.model_id,
        "choices": choices,
        "usage": _usage(results),
    }


async def stream_events(
    service: Service,
    ticket: Ticket,
    think: bool,
    max_tokens: int,
    include_usage: bool,
    cid: str,
    created: int,
    notice: str | None = None,
) -> AsyncIterator[str]:
    """The server-sent events of a streamed completion (see the module docstring); ``notice`` goes into
    the first chunk as ``warning``."""

    def event(choices: list, **extra) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": service.model_id,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def deltas(index: int, pieces: list) -> list[str]:
        return [event([{"index": index, "delta": {field: text}, "finish_reason": None}]) for field, text in pieces]

    n = len(ticket.requests)
    streams = [AnswerStream(service.inferencer.tokenizer.decode, think) for _ in range(n)]
    yield event(
        [{"index": i, "delta": {"role": "assistant", CONTENT: ""}, "finish_reason": None} for i in range(n)],
        **({"warning": notice} if notice else {}),
    )
    results: dict[int, Result] = {}
    while len(results) < n:
        try:
            kind, index, value = await asyncio.wait_for(ticket.events.get(), KEEPALIVE_S)
        except asyncio.TimeoutError:
            yield ": keep-alive\n\n"
            continue
        if kind == "token":
            for text in deltas(index, streams[index].push(value)):
                yield text
        elif kind == "result":
            results[index] = value
            for text in deltas(index, streams[index].finish()):
                yield text
            yield event([{"index": index, "delta": {}, "finish_reason": _finish_reason(value, max_tokens)}])
        else:
            yield f"data: {json.dumps(as_api_error(value).body())}\n\n"
            return
    if include_usage:
        yield event([], usage=_usage([results[i] for i in range(n)]))
    yield "data: [DONE]\n\n"


def chat_router(service: Service) -> APIRouter:
    """The ``/v1/chat/completions`` route, served by ``service``."""
    router = APIRouter()

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, http: HTTPRequest) -> Response:
        settings = service.settings
        service.check_model(body.model)
        max_tokens = check_supported(body, settings)
        # Decoding images is CPU work: off the event loop, which keeps serving other clients.
        inputs = await asyncio.to_thread(chat_inputs, body.messages, settings)
        notice = no_image_notice(inputs)
        requests = [
            Request(
                inputs,
                "understand",
                body.think,
                max_tokens,
                body.temperature,
                body.top_p,
                seed=None if body.seed is None else body.seed + i,
            )
            for i in range(body.n)
        ]
        ticket = service.submit(requests, stream=body.stream)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            events = stream_events(service, ticket, body.think, max_tokens, usage, cid, created, notice)
            return TicketStream(events, ticket)
        try:
            results = await service.results(ticket, http)
        except ClientGone:
            return Response(status_code=CLIENT_GONE)
        answer = completion_body(service, results, body.think, max_tokens, cid, created)
        return JSONResponse({**answer, "warning": notice} if notice else answer)

    return router
