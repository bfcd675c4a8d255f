"""Errors in OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``, for every route.

Handlers raise :class:`APIError`; :func:`install_error_handlers` turns it, FastAPI's validation
errors, Starlette's routing errors (404, 405, a malformed body) and the library's
:class:`~unimedvl.errors.UserError` into that shape, so the official client raises its typed
exceptions (``AuthenticationError``, ``BadRequestError``, ...) with our message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from unimedvl.errors import UserError

# status -> OpenAI's error type for it.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "server_error",
}


@dataclass
class APIError(Exception):
    """An error answer: HTTP status, a message saying what to change, and OpenAI's type/code/param."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @property
    def type(self) -> str:
        """The OpenAI error ``type`` for this status, which clients branch on."""
        return _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        """The OpenAI-shaped JSON error body, so the official clients raise their usual exceptions."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """The error as the HTTP response (status, headers such as Retry-After, JSON body)."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400: the request asks for something this server cannot do or gets a value wrong."""
    return APIError(400, message, code=code, param=param)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ""
    for part in first.get("loc", ()):
        if part != "body":  # FastAPI's prefix; ours name fields as messages[0].content
            param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    param = param or None
    more = len(exc.errors()) - 1
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""), param


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers (before the first request: Starlette caches its middleware stack then)."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return bad_request(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {
            404: f"no route {request.url.path}: see GET /v1/models and the README for the routes",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return APIError(exc.status_code, message, headers=dict(exc.headers or {})).response()

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return bad_request(str(exc)).response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so uvicorn logs the traceback.
        return APIError(500, f"internal error ({type(exc).__name__}); the server log has the traceback").response()
