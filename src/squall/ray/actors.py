"""The Ray actors of a run: one coordinator (every key's budget) and its workers.

Both are plain classes, made Ray actors by `squall.ray.cluster` (so this module imports no
Ray and its logic is tested without a cluster). A worker runs squall's own engine, unchanged,
over each batch of rows the driver hands it, with three ports of its own:

    pool       RemotePool: slots leased from the coordinator (cluster-wide limits)
    transport  Transport: the same aiohttp sender as a local run
    journal    EventJournal: each change becomes an event streamed back to the driver,
               which records it in the run's journal; nothing counts until it has

`Worker.process` is an async generator (Ray streams what it yields): the driver sees each
answer within `FLUSH_S`, not when the whole batch is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..clock import MonotonicClock
from ..config import RetryConfig
from ..engine import Engine
from ..events import RunStats
from ..operations import Operation, packing
from ..records import Completion, ErrorInfo, RequestSpec
from ..redact import Redactor
from ..retry import RetryPolicy
from ..transport import Target, Transport
from .budget import ClusterBudget, KeyBudget, KeyCounters, Report, Slot

FLUSH_S = 0.05
"""How often a worker streams the events gathered so far back to the driver."""


class Coordinator:
    """Owns every key's budget for the cluster; workers lease slots from it.

    Args:
        keys: each key's limits, model and endpoint.
    """

    def __init__(self, keys: list[KeyBudget]) -> None:
        self._budget = ClusterBudget(keys)

    def lease(
        self, n: int, tokens: float, reports: list[Report], worker: int = 0
    ) -> tuple[list[Slot], int]:
        """Take `reports` back, then return up to `n` slots and how many keys are alive."""
        now = time.time()
        if reports:
            self._budget.report(now, reports, worker)
        return self._budget.lease(now, n, tokens, worker), self._budget.alive

    def report(self, reports: list[Report], worker: int = 0) -> None:
        """Take back slots with what became of them (a 429 or a dead key, at once)."""
        self._budget.report(time.time(), reports, worker)

    def forget(self, worker: int) -> int:
        """Take back the slots of a lost worker; return how many it held."""
        return self._budget.forget(worker)

    def stats(self) -> list[KeyCounters]:
        """Return each key's cluster-wide counters."""
        return self._budget.stats()


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to send: built by the driver, pickled to each worker.

    `targets` holds the keys' credentials (the only secrets here): Ray carries them to the
    worker in its object store, and the worker never logs them (its Redactor masks them in
    every error message it streams back).

    Attributes:
        targets: each key id's URL and headers.
        keys: each key's limits and model.
        operation: the run's operation (as the plan chose and configured it).
        retry: the retry settings.
        max_tokens: the run's max_tokens (for the token booking).
        keep_raw: keep each answer's body (OpenAI batch lines output).
        grace_s: how long in-flight requests get after a stop.
    """

    targets: dict[str, Target] = field(repr=False)  # the credentials: never in a repr
    keys: dict[str, KeyBudget]
    operation: Operation
    retry: RetryConfig
    max_tokens: int | None
    keep_raw: bool
    grace_s: float


Event = tuple[Any, ...]
"""("ok", index, Completion, latency_s, attempts, endpoint, model) | ("retry", index,
ErrorInfo) | ("fail", index, ErrorInfo, attempts, endpoint, retryable) | ("end", status,
reason)."""


class EventJournal:
    """The engine's `JournalPort` in a worker: each change becomes an event for the driver.

    `mark_sent` is the driver's (it marks a batch's rows before handing it out), so it is
    nothing here.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def _add(self, event: Event) -> None:
        self.events.append(event)
        self.changed.set()

    def take(self) -> list[Event]:
        """Return the events gathered since the last call."""
        out, self.events = self.events, []
        self.changed.clear()
        return out

    async def mark_sent(self, index: int) -> None:
        """Nothing: the driver marked the row sent before handing it out."""

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
        """Stream the answer back."""
        self._add(("ok", index, completion, latency_s, attempts, endpoint, model))

    async def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Stream the retry back (the driver counts it in the journal)."""
        self._add(("retry", index, error))

    async def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None:
        """Stream the failure back."""
        self._add(("fail", index, error, attempts, endpoint, retryable))

    async def flush(self) -> None:
        """Nothing to flush: the driver commits."""


class Worker:
    """Sends the batches of rows the driver hands it (see the module docstring).

    Args:
        setup: what to send with.
        coordinator: the coordinator actor's handle.
        number: this worker's number, for its name and its line in the display.
    """

    def __init__(self, setup: WorkerSetup, coordinator: Any, number: int) -> None:
        self._setup = setup
        self._coordinator = coordinator
        self.number = number
        self._transport: Transport | None = None
        self._pool: Any = None
        self._redactor = Redactor(
            [h.removeprefix("Bearer ") for t in setup.targets.values() for h in _auth(t)]
        )
        self._op = setup.operation

    def pid(self) -> int:
        """Return the worker's process id (tests kill it)."""
        return os.getpid()

    async def _ensure(self) -> None:
        if self._transport is not None:
            return
        from .remote_pool import RemotePool

        s = self._setup
        coordinator = self._coordinator

        async def lease(n: int, tokens: float, reports: list[Report]) -> tuple[list[Slot], int]:
            result: tuple[list[Slot], int] = await coordinator.lease.remote(
                n, tokens, reports, self.number
            )
            return result

        async def report(reports: list[Report]) -> None:
            await coordinator.report.remote(reports, self.number)

        self._pool = RemotePool(lease, report, s.keys)
        transport = Transport(
            max_connections=max(1, self._pool.max_in_flight),
            redactor=self._redactor,
            keep_raw=s.keep_raw,
            operation=self._op,
            targets=s.targets,
        )
        await transport.__aenter__()
        self._transport = transport

    async def process(self, batch: list[RequestSpec]) -> AsyncIterator[list[Event]]:
        """Send every row of `batch`; yield the events as they come, then ("end", ...)."""
        await self._ensure()
        assert self._transport is not None
        s = self._setup
        journal = EventJournal()
        engine = Engine(
            pool=self._pool,
            transport=self._transport,
            journal=journal,
            retry=RetryPolicy(s.retry, random.Random()),
            clock=MonotonicClock(),
            stats=RunStats(total=len(batch)),
            max_tokens=s.max_tokens,
            grace_s=s.grace_s,
            packing=packing(self._op),
            redact=self._redactor,
        )
        task = asyncio.ensure_future(engine.run(batch))
        try:
            while not task.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), timeout=FLUSH_S)
                if journal.events:
                    yield journal.take()
            outcome = task.result()
        finally:
            if not task.done():
                task.cancel()
        rest = journal.take()
        yield [*rest, ("end", outcome.status, outcome.reason)]

    async def close(self) -> None:
        """Give back the slots not used and close the connections."""
        if self._pool is not None:
            await self._pool.close()
        if self._transport is not None:
            await self._transport.__aexit__(None, None, None)
            self._transport = None


def _auth(target: Target) -> list[str]:
    value = target.headers.get("Authorization")
    return [value] if value else []
