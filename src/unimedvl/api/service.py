"""What every route shares: the loaded model, the settings, the batcher and the metrics.

It also turns the batcher's outcomes into HTTP ones: a full queue is a 503 with ``Retry-After``
(the official client waits that long and retries, twice by default), a user error from the
model (an output size it cannot make, ...) a 400, anything else a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.requests import Request as HTTPRequest

from unimedvl.api.batcher import Batcher, ClientGone, QueueFull, ServerClosing, Ticket
from unimedvl.api.errors import APIError, bad_request
from unimedvl.api.metrics import ServerMetrics
from unimedvl.api.settings import ServerSettings
from unimedvl.errors import UserError
from unimedvl.inference.inferencer import Inferencer, Request, Result


@dataclass
class Service:
    """The state behind the routes of one server."""

    inferencer: Inferencer
    settings: ServerSettings
    batcher: Batcher
    metrics: ServerMetrics
    model_id: str = "unimedvl"  # the id in /v1/models and in every response
    created: int = 0  # unix time of the checkpoint (the "created" of /v1/models)
    info: dict = field(default_factory=dict)  # the checkpoint facts shown by /v1/models

    def check_model(self, name: str | None) -> None:
        """A 404 for a model name this server does not serve (as OpenAI and vLLM answer); None: the served one."""
        if name is not None and name != self.model_id:
            raise APIError(
                404,
                f"model {name!r} is not served here; this server serves {self.model_id!r} (GET "
                "/v1/models lists it; unimedvl api --served-model-name sets it)",
                code="model_not_found",
                param="model",
            )

    def submit(self, requests: Sequence[Request], stream: bool = False) -> Ticket:
        """Queue the requests or raise the APIError a client should see."""
        if len(requests) > self.settings.queue_size:
            raise bad_request(
                f"n={len(requests)} is more than this server's queue holds ({self.settings.queue_size})", "n"
            )
        try:
            return self.batcher.submit(requests, asyncio.get_running_loop(), stream)
        except QueueFull as err:
            raise APIError(
                503,
                f"{err}: the queue holds at most {self.settings.queue_size} requests",
                code="queue_full",
                headers={"Retry-After": str(err.retry_after)},
            ) from None
        except ServerClosing as err:
            raise APIError(503, str(err), code="shutting_down") from None

    async def results(self, ticket: Ticket, http: HTTPRequest) -> list[Result]:
        """The ticket's results; cancels it when the client goes away or the handler is cancelled."""
        try:
            return await ticket.results(http.is_disconnected)
        except ClientGone:
            raise
        except Exception as err:
            raise as_api_error(err) from None
        finally:
            ticket.cancel()  # no-op when every result came


def as_api_error(err: Exception) -> APIError:
    """The HTTP answer for an error that came back from the worker."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, UserError):
        return bad_request(str(err))
    if isinstance(err, ServerClosing):
        return APIError(503, str(err), code="shutting_down")
    return APIError(500, f"internal error ({type(err).__name__}); the server log has the traceback")
