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


class _Commit(asyncio.Future[None]):
    """The commit of one event-loop turn, awaited by every change made in that turn.

    One future for all of them, not one each (a future per awaiter cost more than all of
    this module's other work). It refuses to be cancelled: a task cancelled while it waits
    would otherwise cancel it for every other awaiter. asyncio then cancels that task when
    the commit lands, a moment later, in the same turn.
    """

    def cancel(self, msg: object = None) -> bool:
        return False


class LocalJournal:
    """A `JournalPort` that commits a local `Journal` once per event-loop turn."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._pending: _Commit | None = None  # the commit this turn scheduled, if any
        self._scheduled: asyncio.Handle | None = None

    def _landed(self) -> _Commit:
        """Return the future that resolves when this turn's commit lands."""
        pending = self._pending
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._pending = _Commit(loop=loop)
            self._scheduled = loop.call_soon(self._commit)
        return pending

    def _commit(self) -> None:
        pending, self._pending = self._pending, None
        if self._scheduled is not None:
            self._scheduled.cancel()  # a no-op when it is this call; else flush() came first
            self._scheduled = None
        try:
            self._journal.commit()
        except BaseException as e:  # every change of the turn is lost: each awaiter is told
            if pending is not None:
                pending.set_exception(e)
            return
        if pending is not None:
            pending.set_result(None)

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
