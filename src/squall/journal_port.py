"""`LocalJournal`: the engine's `JournalPort` over a `Journal` file in this process.

Each verb applies its change to SQLite at once and then waits for the commit of the current
event-loop turn: the first change of a turn schedules one commit (`call_soon`), and every
change made in that turn returns when it lands. So "sent is durable before the request
leaves" is an explicit await, and a thousand changes in one turn still cost one commit, which
is most of what the journal costs at thousands of requests a second.
"""

from __future__ import annotations

import asyncio

from .journal import Journal
from .records import Completion, ErrorInfo


class LocalJournal:
    """A `JournalPort` that commits a local `Journal` once per event-loop turn."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        # The awaiters of the commit this turn scheduled; None when none is scheduled. Each
        # has its own future, so a cancelled awaiter cannot cancel the others' wait.
        self._waiting: list[asyncio.Future[None]] | None = None
        self._scheduled: asyncio.Handle | None = None

    def _landed(self) -> asyncio.Future[None]:
        """Return a future that resolves when this turn's commit lands."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._waiting is None:
            self._waiting = [fut]
            self._scheduled = loop.call_soon(self._commit)
        else:
            self._waiting.append(fut)
        return fut

    def _commit(self) -> None:
        waiting, self._waiting = self._waiting or [], None
        if self._scheduled is not None:
            self._scheduled.cancel()  # a no-op when it is this call; else flush() came first
            self._scheduled = None
        try:
            self._journal.commit()
        except BaseException as e:  # every change of the turn is lost: each awaiter is told
            for fut in waiting:
                if not fut.done():
                    fut.set_exception(e)
            return
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    async def mark_sent(self, index: int) -> None:
        """Record row `index` as sent; return once that is on disk."""
        self._journal.mark_sent(index)
        await self._landed()

    async def record_success(
        self,
        index: int,
        completion: Completion,
        *,
        latency_s: float,
        attempts: int,
        endpoint: str,
        model: str | None = None,
    ) -> None:
        """Record row `index`'s answer; return once it is on disk."""
        self._journal.record_success(
            index,
            completion,
            latency_s=latency_s,
            attempts=attempts,
            endpoint=endpoint,
            model=model,
        )
        await self._landed()

    async def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Record a failed try that will be tried again; return once it is on disk."""
        self._journal.record_retry(index, error)
        await self._landed()

    async def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None:
        """Record that row `index` failed for good; return once it is on disk."""
        self._journal.record_failure(
            index, error, attempts=attempts, endpoint=endpoint, retryable=retryable
        )
        await self._landed()

    async def flush(self) -> None:
        """Commit now whatever is not yet on disk."""
        self._commit()
