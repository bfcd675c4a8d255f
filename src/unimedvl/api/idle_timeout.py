"""Idle connections are closed: uvicorn's h11 protocol with a header timeout.

uvicorn times out a kept-alive connection between requests (``timeout_keep_alive``), but a
connection that never sends a request, or sends its headers a byte at a time, stays open forever:
enough of them exhaust the server's sockets. Here a connection must complete a request's headers
within ``header_timeout`` seconds of opening or of its previous response, or it is closed. A request
being processed (a long generation, a stream) is never cut: the deadline is armed again only
after its response has been sent.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 15.0  # to send a request's headers: generous for a slow client, short for an idle socket
KEEP_ALIVE_S = 5  # uvicorn's timeout_keep_alive (its default), passed explicitly


class TimedH11Protocol(H11Protocol):
    """H11Protocol that closes a connection waiting too long for request headers."""

    header_timeout = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header deadline as soon as a client connects."""
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout, self._close_if_waiting)

    def _close_if_waiting(self) -> None:
        self._deadline = None
        waiting = self.cycle is None or self.cycle.response_complete  # no request in progress
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        """Re-arm the deadline for the next request on a kept-alive connection."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have header_timeout too

    def connection_lost(self, exc: Exception | None) -> None:
        """Cancel the deadline so a closed connection leaves no timer behind."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


def with_timeout(seconds: float) -> type[TimedH11Protocol]:
    """The protocol class with another header timeout (tests)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": float(seconds)})


def server_options() -> dict:
    """What every uvicorn server of the API is started with."""
    return {"http": TimedH11Protocol, "timeout_keep_alive": KEEP_ALIVE_S}
