"""The checks every HTTP request passes before a route sees it, as plain ASGI middleware.

Outermost first: :class:`Timing` (the request counter and latency histogram, also of refused
requests), :class:`BearerAuth` (``--api-key`` on every route but ``/health``, before any body
is read), :class:`BodyLimit` (``--max-body-mb``, from ``Content-Length`` and while the body
streams in, so a chunked upload cannot slip past). Their refusals are OpenAI-shaped JSON.
"""

from __future__ import annotations

import hmac
import json
import time

from unimedvl.api.errors import APIError
from unimedvl.api.metrics import ServerMetrics

OPEN_PATHS = ("/health",)  # answered without the API key (load balancers, liveness probes)
ROUTES = ("/v1/chat/completions", "/v1/images/generations", "/v1/images/edits", "/v1/models", "/health", "/metrics")


async def _send_error(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Timing:
    """Counts every answered request by route and status, and times it to the end of its body."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"  # bounded label values
        status = {"code": 0}
        start = time.perf_counter()

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            # 499: the client left before an answer started (no status was ever sent).
            self.metrics.requests.inc(route=route, status=str(status["code"] or 499))
            self.metrics.latency.observe(time.perf_counter() - start, route=route)


def _unauthorized(message: str) -> APIError:
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


class BearerAuth:
    """``Authorization: Bearer KEY`` required on every route but /health (no key configured: open)."""

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            await _send_error(
                send,
                _unauthorized(
                    "missing API key: send the header 'Authorization: Bearer KEY' "
                    "(the official client does when given api_key=...)"
                ),
            )
            return
        if not hmac.compare_digest(token.strip(), self.key):  # constant time: no key guessing by timing
            await _send_error(
                send, _unauthorized("incorrect API key provided: use the key the server was started with (--api-key)")
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, whether announced or streamed.

    A streamed body that passes the limit is answered 413 at once; the route then sees the client
    disconnect, and whatever it answers to that is dropped (the 413 went out already).
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _error(self) -> APIError:
        mb = self.max_bytes / (1024 * 1024)
        return APIError(
            413,
            f"the request body is larger than this server accepts ({mb:g} MB, --max-body-mb); send "
            "smaller or fewer images",
            code="request_too_large",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(send, self._error())
            return
        state = {"bytes": 0, "started": False, "refused": False}

        async def counted_receive():
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > self.max_bytes:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _send_error(send, self._error())
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message) -> None:
            if state["refused"]:
                return  # the route's answer to a body it never fully got
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)
