"""Live event streams for subscriptions: read the ordered history from a cursor, then wait for the doorbell.

The graph is the only source of events; the Redis doorbell (controlplane.eventbus)
only says "something changed", so a subscriber polls as well and a lost ring
costs latency, never an event. Without a Redis URL it simply polls.

The cursor re-reads a short window before the newest event it delivered and
skips the ids it already delivered there: several events may share one `at`,
and an engine may hand `at` back rounded (FalkorDB keeps 15 significant digits),
so "strictly after the last `at`" could skip an event or repeat one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence

from starlette.concurrency import run_in_threadpool

from controlplane.domain.records import Event
from controlplane.eventbus import Doorbell
from controlplane.services import ControlPlane

PAGE = 500
MAX_PAGE = 10_000
#: how far back each read looks for events sharing (or rounded to) the newest `at`, in seconds
WINDOW_S = 0.01
#: longest wait between reads: polling alone, or with a doorbell (which not every writer rings)
POLL_S = 0.5
DOORBELL_POLL_S = 2.0


class EventCursor:
    """Where a subscriber is in the history: what to ask next, and which of the answer is new."""

    def __init__(self, since: float | None) -> None:
        self._floor = since  # never deliver anything at or before what the client asked to skip
        self.since = since  # exclusive lower bound of the next read
        self.limit = PAGE
        self._latest: float | None = None
        self._delivered: dict[str, float] = {}  # ids delivered within the window, with their `at`

    def advance(self, batch: Sequence[Event]) -> list[Event]:
        """The events of `batch` (as read with `since` and `limit`) not delivered before, in order."""
        new = [e for e in batch if e.id not in self._delivered]
        for e in new:
            self._delivered[e.id] = e.at
            self._latest = e.at if self._latest is None else max(self._latest, e.at)
        if self._latest is not None:
            start = self._latest - WINDOW_S
            self.since = start if self._floor is None else max(self._floor, start)
            self._delivered = {i: at for i, at in self._delivered.items() if at >= start - WINDOW_S}
        if len(batch) >= self.limit and not new:  # a full page of known events: look further at once
            if self.limit < MAX_PAGE:
                self.limit = min(MAX_PAGE, self.limit * 2)
            elif self._latest is not None:  # more than MAX_PAGE events in one window: step past it
                self.since = self._latest
        elif new:
            self.limit = PAGE
        return new


async def follow_events(
    control: ControlPlane, allocation_id: str | None, since: float | None, *, redis_url: str | None
) -> AsyncGenerator[Event, None]:
    """Every event of `allocation_id` (or of all) after `since` (None: from now on), in order, forever; stops when
    closed or cancelled."""
    cursor = EventCursor(control.clock() if since is None else since)
    async with _waiter(redis_url) as (wait, poll_s):
        while True:
            limit = cursor.limit
            batch = await run_in_threadpool(control.queries.events, allocation_id, since=cursor.since, limit=limit)
            for event in cursor.advance(batch):
                yield event
            if len(batch) < limit:  # caught up; a full page reads on at once
                await wait(poll_s)


Wait = Callable[[float], Awaitable[None]]


@contextlib.asynccontextmanager
async def _waiter(redis_url: str | None) -> AsyncIterator[tuple[Wait, float]]:
    """How to wait for news, and how long at most."""
    if redis_url is None:
        yield asyncio.sleep, POLL_S
        return
    async with Doorbell(redis_url).listen() as bell:
        yield bell.wait, DOORBELL_POLL_S
