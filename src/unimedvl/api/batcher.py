"""Batching across concurrent HTTP requests: one worker thread, one ``Inferencer.run`` per batch.

Every HTTP call becomes a :class:`Ticket` holding its inference requests (``n`` of them for
``n`` choices or images). Each request waits in one FIFO queue as an item. The worker takes the
oldest item, waits up to the gathering window (counted from that item's arrival) for more items
of the same task, then serves up to ``max_batch`` items of that task, oldest first, in one
``Inferencer.run``. Tasks are batched apart so a question never waits for a 50-step image.
Items of other tasks keep their place, so the oldest item is always in the next batch (FIFO
fairness). Under load the window costs nothing: the backlog is already older than it.

A request's result does not depend on its batch-mates: the Inferencer gives every request its
own seed and generators. One exception the batcher handles itself: when a batch of several
fails on a user error (one bad request), each request is retried alone, so only the bad one
fails.

Cancellation (a client that disconnected) is a flag per ticket: a queued item is dropped at
once; a running text request stops at its next token (``Request.stop``); a running image batch
stops at its next denoising step when every request in it is cancelled.

Step-level batching (``stepper``, :mod:`unimedvl.inference.stepping`): image requests with the
reference sampler are not served as whole batches but join the running denoising batch between
two steps (up to ``max_batch`` being denoised); between steps the worker also admits the newly
queued ones and serves a due batch of other work (questions, fast-sampler images), so nothing waits
for a 50-step image. A member whose client is gone leaves at the next step.

Results, streamed tokens and errors go back to the ticket's asyncio loop as events
``(kind, index, value)`` with kind ``"token"``, ``"result"`` or ``"error"``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from unimedvl.api.metrics import ServerMetrics
from unimedvl.defaults import SERVER_QUEUE_SIZE
from unimedvl.errors import UserError
from unimedvl.inference.inferencer import Request, Result

if TYPE_CHECKING:
    from unimedvl.inference.stepping import StepBatch

log = logging.getLogger("unimedvl.api")

# Serves a batch: (requests, progress(step, total)) -> one Result per request (Inferencer.run).
RunBatch = Callable[[Sequence[Request], Callable[[int, int], None]], list[Result]]


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests already; try again after ``retry_after`` seconds."""

    def __init__(self, queued: int, retry_after: int):
        super().__init__(f"the server is busy ({queued} requests queued); retry in {retry_after} s")
        self.retry_after = retry_after


class ServerClosing(Exception):
    """The server is shutting down and takes no more work."""


class ClientGone(Exception):
    """The client disconnected while its request waited (nobody reads the answer)."""


class _AllCancelled(Exception):
    """Raised from the progress callback to abandon an image batch nobody waits for."""


@dataclass
class _Item:
    ticket: Ticket
    index: int  # position in ticket.requests
    arrived: float  # time.monotonic() at submit

    @property
    def request(self) -> Request:
        return self.ticket.requests[self.index]


class Ticket:
    """One HTTP call's inference requests, their cancel flag and the events coming back."""

    def __init__(
        self,
        requests: Sequence[Request],
        loop: asyncio.AbstractEventLoop,
        stream: bool,
        on_cancel: Callable[[Ticket], None],
    ):
        self.requests = list(requests)
        self.task = self.requests[0].task
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self._on_cancel = on_cancel
        self._lock = threading.Lock()
        self._left = len(self.requests)  # results not delivered yet
        for index, request in enumerate(self.requests):
            request.stop = self.cancelled.is_set
            request.on_token = partial(self._post, "token", index) if stream else None

    @property
    def finished(self) -> bool:
        """Whether every request of the call has its result (or the call failed)."""
        with self._lock:
            return self._left == 0

    def _post(self, kind: str, index: int, value: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, index, value))
        except RuntimeError:  # the loop is closed (server stopped): nobody is listening any more
            self.cancelled.set()

    def deliver(self, index: int, result: Result) -> None:
        """Hand one request's result back to the waiting HTTP handler."""
        with self._lock:
            self._left -= 1
        self._post("result", index, result)

    def fail(self, error: Exception) -> None:
        """End the whole call with ``error``; the handler turns it into the HTTP error."""
        with self._lock:
            self._left = 0
        self._post("error", -1, error)

    def cancel(self) -> None:
        """Give up on this ticket (its client is gone); a no-op once every result is delivered."""
        if self.finished or self.cancelled.is_set():
            return
        self.cancelled.set()
        self._on_cancel(self)

    async def results(self, disconnected: Callable[[], Awaitable[bool]], poll_s: float = 0.5) -> list[Result]:
        """Every result, in order; polls ``disconnected`` while waiting and cancels if it says so."""
        out: dict[int, Result] = {}
        while len(out) < len(self.requests):
            try:
                kind, index, value = await asyncio.wait_for(self.events.get(), poll_s)
            except asyncio.TimeoutError:
                if await disconnected():
                    self.cancel()
                    raise ClientGone() from None
                continue
            if kind == "error":
                raise value
            if kind == "result":
                out[index] = value
        return [out[i] for i in range(len(self.requests))]


class Batcher:
    """The queue and the worker thread that serves it (see the module docstring)."""

    def __init__(
        self,
        run: RunBatch,
        metrics: ServerMetrics,
        max_batch: int = 8,
        window_s: float = 0.02,
        queue_size: int = SERVER_QUEUE_SIZE,
        stepper: StepBatch | None = None,
    ):
        self._run = run
        self._stepper = stepper  # step-level batching of reference-sampler image requests (None: off)
        self._members: dict[int, _Item] = {}  # id(member of the stepper) -> its queue item
        self.metrics = metrics
        self.max_batch = max_batch
        self.window_s = window_s
        self.queue_size = queue_size
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._batch_seconds = 1.0  # running mean of a batch's time, for Retry-After
        self._thread = threading.Thread(target=self._work, name="unimedvl-api-batcher", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread that serves the queue."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the worker still takes work (the health check reports it)."""
        return self._thread.is_alive() and not self._closing

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking work; queued tickets fail with ServerClosing; the running batch may finish."""
        with self._cond:
            self._closing = True
            left = list(self._queue)
            self._queue.clear()
            self._set_depth()
            self._cond.notify_all()
        for ticket in {id(item.ticket): item.ticket for item in left}.values():
            ticket.fail(ServerClosing("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the HTTP side -----------------------------------------------------------------------

    def submit(self, requests: Sequence[Request], loop: asyncio.AbstractEventLoop, stream: bool = False) -> Ticket:
        """Queue one HTTP call's requests (all of one task) or raise QueueFull / ServerClosing."""
        if not requests or len({r.task for r in requests}) != 1:
            raise ValueError("submit takes one or more requests of one task")
        with self._cond:
            if self._closing:
                raise ServerClosing("the server is shutting down")
            if not self._thread.is_alive():  # never started, or died on a bug (logged)
                raise ServerClosing("the inference worker is not running; see the server log")
            if len(self._queue) + len(requests) > self.queue_size:
                self.metrics.rejected.inc()
                raise QueueFull(len(self._queue), self.retry_after())
            ticket = Ticket(requests, loop, stream, self._forget)
            now = time.monotonic()
            self._queue.extend(_Item(ticket, i, now) for i in range(len(requests)))
            self._set_depth()
            self._cond.notify_all()
        return ticket

    def retry_after(self) -> int:
        """Seconds until the queue has room, roughly: the batches ahead times a batch's time."""
        batches_ahead = len(self._queue) / self.max_batch + 1
        return int(min(60, max(1, math.ceil(batches_ahead * self._batch_seconds))))

    @property
    def depth(self) -> int:
        """How many requests wait in the queue (the queue-depth gauge)."""
        with self._cond:
            return len(self._queue)

    def _forget(self, ticket: Ticket) -> None:
        """A cancelled ticket's queued items leave the queue now (its running ones stop by flag)."""
        with self._cond:
            self._queue = deque(item for item in self._queue if item.ticket is not ticket)
            self._set_depth()
            self._cond.notify_all()
        self.metrics.cancelled.inc()

    def _set_depth(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))

    # -- the worker --------------------------------------------------------------------------

    def _next_batch(self) -> list[_Item] | None:
        """Block until a batch is due; None when closing."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                first = self._queue[0]
                batch = [item for item in self._queue if item.request.task == first.request.task][: self.max_batch]
                wait = first.arrived + self.window_s - time.monotonic()
                if len(batch) < self.max_batch and wait > 0:
                    self._cond.wait(wait)  # woken early by a new arrival or a cancel
                    continue
                taken = {id(item) for item in batch}
                self._queue = deque(item for item in self._queue if id(item) not in taken)
                self._set_depth()
                return batch

    def _work(self) -> None:
        while True:
            if self._stepper is not None and self._stepper.active:
                if not self._between_steps():
                    return
                continue
            batch = self._next_batch()
            if batch is None:
                return
            self._dispatch(batch)

    def _dispatch(self, batch: list[_Item]) -> None:
        """Stepped image requests join the denoising batch; the rest are served as one batch."""
        if self._stepper is None:
            self._serve(batch)
            return
        joining = [item for item in batch if self._stepper.accepts(item.request)]
        rest = [item for item in batch if not self._stepper.accepts(item.request)]
        if joining:
            self._join(joining)
        if rest:
            self._serve(rest)

    def _between_steps(self) -> bool:
        """Admit what arrived, serve a due batch of other work, then one denoising step; False when closing."""
        assert self._stepper is not None
        with self._cond:
            if self._closing:
                for item in self._members.values():
                    item.ticket.fail(ServerClosing("the server is shutting down"))
                return False
            room = self.max_batch - self._stepper.active
            joining = [item for item in self._queue if self._stepper.accepts(item.request)][: max(room, 0)]
            taken = {id(item) for item in joining}
            others = [item for item in self._queue if id(item) not in taken]
            due: list[_Item] = []
            if others and others[0].arrived + self.window_s <= time.monotonic():
                first = others[0]
                due = [
                    item
                    for item in others
                    if item.request.task == first.request.task and not self._stepper.accepts(item.request)
                ][: self.max_batch]
                taken |= {id(item) for item in due}
            self._queue = deque(item for item in self._queue if id(item) not in taken)
            self._set_depth()
        if joining:
            self._join(joining)
        if due:
            self._serve(due)
        self._step()
        return True

    def _join(self, items: list[_Item]) -> None:
        assert self._stepper is not None
        items = [item for item in items if not item.ticket.cancelled.is_set()]
        if not items:
            return
        try:
            members = self._stepper.admit([item.request for item in items])
        except UserError as err:
            if len(items) == 1:
                items[0].ticket.fail(err)
                return
            for item in items:  # one bad request must not keep its batch-mates out
                self._join([item])
            return
        except Exception as err:
            log.exception("preparing %d image requests failed", len(items))
            for item in items:
                item.ticket.fail(err)
            return
        self.metrics.batch_size.observe(len(items), task=items[0].request.task)
        for member, item in zip(members, items):
            self._members[id(member)] = item
        self.metrics.running.set(self._stepper.active)

    def _step(self) -> None:
        assert self._stepper is not None
        for member in list(self._stepper.members):
            if self._members[id(member)].ticket.cancelled.is_set():
                self._stepper.drop(member)
                del self._members[id(member)]
        if not self._stepper.active:
            self.metrics.running.set(0)
            return
        try:
            finished = self._stepper.step()
        except Exception as err:  # a bug: every member's ticket gets a 500, the log the traceback
            log.exception("a denoising step of %d image requests failed", self._stepper.active)
            for member in list(self._stepper.members):
                self._stepper.drop(member)
                self._members.pop(id(member)).ticket.fail(err)
            return
        for member, result in finished:
            item = self._members.pop(id(member))
            if not item.ticket.cancelled.is_set():
                item.ticket.deliver(item.index, result)
        self.metrics.running.set(self._stepper.active)

    def _serve(self, batch: list[_Item]) -> None:
        batch = [item for item in batch if not item.ticket.cancelled.is_set()]
        if not batch:
            return
        task = batch[0].request.task
        self.metrics.running.set(len(batch))
        self.metrics.batch_size.observe(len(batch), task=task)
        start = time.perf_counter()
        try:
            results = self._run([item.request for item in batch], partial(_abandon_if_all_cancelled, batch))
        except _AllCancelled:
            return
        except UserError as err:
            if len(batch) == 1:
                batch[0].ticket.fail(err)
                return
            # One bad request must not fail its batch-mates: serve them one by one.
            for item in batch:
                self._serve([item])
            return
        except Exception as err:  # a bug: every ticket of the batch gets a 500, the log the traceback
            log.exception("Inferencer.run failed on a batch of %d %s requests", len(batch), task)
            for item in batch:
                item.ticket.fail(err)
            return
        finally:
            self.metrics.running.set(0)
        elapsed = time.perf_counter() - start
        self.metrics.batch_seconds.observe(elapsed, task=task)
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
        for item, result in zip(batch, results):
            self.metrics.tokens.inc(len(result.token_ids))
            if not item.ticket.cancelled.is_set():
                item.ticket.deliver(item.index, result)


def _abandon_if_all_cancelled(batch: list[_Item], step: int, total: int) -> None:
    """Progress callback of image batches: stop denoising when nobody waits for any of them."""
    if all(item.ticket.cancelled.is_set() for item in batch):
        raise _AllCancelled()
