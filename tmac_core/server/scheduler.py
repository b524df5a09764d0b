"""The bounded FIFO queue in front of a Backend: one job runs, the rest wait in arrival order.

Lives on the server's event loop thread; backends report from their own threads through
a Sink that hops onto the loop (call_soon_threadsafe). A job leaves the engine only when
its final chunk (or its failure) arrives, so the next job never meets a busy engine. A
full queue raises QueueFullError with a Retry-After estimated from the recent job times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time

from tmac_core.server.backend import Backend, BackendError, Job
from tmac_core.types import Chunk

Event = Chunk | BackendError  # what a ticket hears: chunks, the last one final, or one failure


class QueueFullError(Exception):
    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"the server is busy; retry in {retry_after_s} s")


class UnqueuedError(BackendError):
    """A waiting job was cancelled before it started (its client left)."""

    status = 499  # nginx's "client closed request": nobody is there to read it
    code = "cancelled"


class Ticket:
    """One submitted job: its events in order, and whether it has ended."""

    def __init__(self, scheduler: Scheduler, job: Job) -> None:
        self.job = job
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.ended = False
        self.started_at: float | None = None
        self._scheduler = scheduler

    async def get(self) -> Event:
        return await self.events.get()

    def cancel(self) -> None:
        """The client left or has what it wanted (a stop sequence): stop or unqueue the job."""
        self._scheduler.cancel(self)


class _LoopSink:
    """A Sink for one ticket: any thread in, the event loop out."""

    def __init__(self, loop: asyncio.AbstractEventLoop, scheduler: Scheduler, ticket: Ticket) -> None:
        self._loop, self._scheduler, self._ticket = loop, scheduler, ticket

    def chunk(self, chunk: Chunk) -> None:
        self._post(chunk)

    def fail(self, error: BackendError) -> None:
        self._post(error)

    def _post(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is gone, nobody listens
            self._loop.call_soon_threadsafe(self._scheduler.deliver, self._ticket, event)


class Scheduler:
    """FIFO over one backend; `max_queue` jobs may wait behind the running one."""

    def __init__(self, backend: Backend, max_queue: int) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.backend, self.max_queue = backend, max_queue
        self._waiting: collections.deque[Ticket] = collections.deque()
        self.running: Ticket | None = None
        self.served = 0  # jobs that ended with a final chunk
        self._recent_s: collections.deque[float] = collections.deque(maxlen=8)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> Ticket:
        """Queue `job` (raises QueueFullError when max_queue jobs already wait)."""
        if self.running is not None and len(self._waiting) >= self.max_queue:
            raise QueueFullError(self._retry_after())
        ticket = Ticket(self, job)
        self._waiting.append(ticket)
        self._next()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if ticket.ended:
            return
        if ticket is self.running:
            self.backend.cancel(ticket.job)
        elif ticket in self._waiting:
            self._waiting.remove(ticket)
            ticket.ended = True
            ticket.events.put_nowait(UnqueuedError("the request was withdrawn before it started"))

    def close(self) -> None:
        """Unqueue everything and stop the running job (the server is stopping)."""
        for ticket in list(self._waiting):
            self.cancel(ticket)
        if self.running is not None:
            self.cancel(self.running)

    def deliver(self, ticket: Ticket, event: Event) -> None:
        """On the loop thread: one event from the backend."""
        ticket.events.put_nowait(event)
        if isinstance(event, BackendError) or event.finish_reason is not None:
            ticket.ended = True
            if ticket is self.running:
                self.running = None
                if isinstance(event, Chunk):
                    self.served += 1
                if ticket.started_at is not None:
                    self._recent_s.append(time.monotonic() - ticket.started_at)
            self._next()

    def _next(self) -> None:
        while self.running is None and self._waiting:
            ticket = self._waiting.popleft()
            self.running = ticket
            ticket.started_at = time.monotonic()
            try:
                self.backend.start(ticket.job, _LoopSink(asyncio.get_running_loop(), self, ticket))
            except BackendError as error:
                self.running = None
                ticket.ended = True
                ticket.events.put_nowait(error)

    def _retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the recent mean job time, at least 1."""
        mean = sum(self._recent_s) / len(self._recent_s) if self._recent_s else 1.0
        return max(1, math.ceil(mean))
