"""The engine: send every request where it can start soonest, record every answer, lose nothing.

The engine is given its parts (a pool of keys, a transport, a journal, a retry policy, a clock)
and builds none of them; `api.py` wires them. Each part sits behind a small protocol, so a
limiter or journal living in another process (Ray) can stand in without touching this file.

One dispatcher task takes the next request (a retry that is due first, else the next input
row), waits for a key to be free, marks the row sent in the journal *before* the request leaves,
and starts a task for it. Every task belongs to the engine's task set, and none outlives `run()`.
An answer is journaled before it counts as done.

Journal changes are committed once per event-loop turn (`Journal.commit`, scheduled with
`call_soon` at a turn's first change): the commit callback is queued ahead of the task of any
request marked sent in that turn, so "sent" is on disk before the request leaves, and an
answer is on disk within the turn it arrived in. One commit per turn instead of one per
change is most of what the journal costs at thousands of requests a second.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from . import jsoncodec
from .clock import Clock
from .errors import RequestError, RetryableError, RunStopped
from .events import RunStats
from .limits import RateInfo
from .pool import Lease
from .records import Completion, ErrorInfo, RequestSpec
from .retry import Attempts, RetryPolicy
from .transport import Target


class JournalLike(Protocol):
    """What the engine needs of a journal."""

    def mark_sent(self, index: int) -> None: ...
    def commit(self) -> None: ...
    def record_success(
        self,
        index: int,
        completion: Completion,
        *,
        latency_s: float,
        attempts: int,
        endpoint: str,
        model: str | None = None,
    ) -> None: ...
    def record_retry(self, index: int, error: ErrorInfo) -> None: ...
    def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None: ...


class PoolLike(Protocol):
    """What the engine needs of a pool of keys."""

    async def acquire(self, prompt_tokens: int, max_tokens: int | None) -> Lease: ...
    def release_ok(self, lease: Lease, completion: Completion, rate: RateInfo | None) -> None: ...
    def release_error(self, lease: Lease, error: RequestError, rate: RateInfo | None) -> None: ...


class TransportLike(Protocol):
    """What the engine needs to send one request."""

    async def send(self, target: Target, body: bytes) -> tuple[Completion, RateInfo | None]: ...


CostFn = Callable[[str, int, int], float]
"""(model, prompt_tokens, completion_tokens) -> USD."""


@dataclass(slots=True)
class _Item:
    spec: RequestSpec
    attempts: Attempts = field(default_factory=Attempts)


@dataclass(frozen=True, slots=True)
class EngineOutcome:
    """How the engine's run ended: "completed", "interrupted" or "stopped" (with a reason)."""

    status: str
    reason: str | None = None
    cut_in_flight: int = 0
    """Requests still in flight when the grace ran out: they may have been billed."""


class Engine:
    """Runs a stream of requests through a pool of keys into a journal."""

    def __init__(
        self,
        *,
        pool: PoolLike,
        transport: TransportLike,
        journal: JournalLike,
        retry: RetryPolicy,
        clock: Clock,
        stats: RunStats,
        max_tokens: int | None = None,
        cost: CostFn | None = None,
        max_cost: float | None = None,
        est_cost: Callable[[RequestSpec], float] | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._transport = transport
        self._journal = journal
        self._retry = retry
        self._clock = clock
        self.stats = stats
        self._max_tokens = max_tokens
        self._cost = cost
        self._max_cost = max_cost
        self._est_cost = est_cost
        self._grace_s = grace_s
        self._heap: list[tuple[float, int, _Item]] = []
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._reserved = 0.0
        self._stop: str | None = None
        self._interrupted = False
        self._failure: BaseException | None = None
        self._changed: asyncio.Future[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._commit_queued = False

    # -- control ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop sending (Ctrl-C): in-flight requests get the grace period to land."""
        if self._stop is None:
            self._stop = reason
            self._interrupted = reason == "interrupted"
            self.stats.stopping = reason
        if self._dispatcher is not None and not self._dispatcher.done():
            self._dispatcher.cancel()

    def cut(self) -> None:
        """Stop at once (a second Ctrl-C): requests in flight are abandoned, maybe billed."""
        self._grace_s = 0.0
        for t in list(self._tasks):
            t.cancel()

    # -- running ---------------------------------------------------------------------------

    async def run(self, specs: Iterable[RequestSpec]) -> EngineOutcome:
        """Send every request in `specs` (streamed), retrying as the policy says."""
        self.stats.started = self.stats.started or self._clock.now()
        self._dispatcher = asyncio.ensure_future(self._dispatch(iter(specs)))
        try:
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                if self._stop is None:  # cancelled from outside, not by request_stop
                    self._stop = "interrupted"
                    self._interrupted = True
                    raise
            cut = await self._drain()
        finally:
            for t in list(self._tasks):
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._commit()
        if self._failure is not None:
            raise self._failure
        if self._stop is None:
            return EngineOutcome("completed")
        status = "interrupted" if self._interrupted else "stopped"
        return EngineOutcome(status, self._stop, cut)

    async def _drain(self) -> int:
        """Let in-flight requests land: all of them after a clean end, within the grace after
        Ctrl-C. Return how many were cut."""
        if not self._tasks:
            return 0
        if self._interrupted:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self._grace_s)
            return len(pending)
        await asyncio.wait(set(self._tasks))
        return 0

    def _journaled(self) -> None:
        """Queue the commit of this turn's journal changes (once per turn)."""
        if not self._commit_queued:
            self._commit_queued = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_queued = False
        try:
            self._journal.commit()
        except BaseException as e:  # a journal that cannot write must stop the run
            if self._failure is None:
                self._failure = e
            self.request_stop(f"internal error: {e}")

    def _wake(self) -> None:
        fut = self._changed
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        """Wait until a task ends or `timeout` seconds pass on the engine's Clock."""
        loop = asyncio.get_running_loop()
        self._changed = fut = loop.create_future()
        if timeout is None:
            await fut
            return
        # Retry delays pass on the Clock, not the loop's timer, so a FakeClock drives them too.
        sleeper = loop.create_task(self._clock.sleep(max(0.0, timeout)))
        sleeper.add_done_callback(lambda _t: _resolve(fut))
        try:
            await fut
        finally:
            sleeper.cancel()

    async def _dispatch(self, source: Iterator[RequestSpec]) -> None:
        exhausted = False
        while self._stop is None and self._failure is None:
            now = self._clock.now()
            item: _Item | None = None
            if self._heap and self._heap[0][0] <= now:
                item = heapq.heappop(self._heap)[2]
            elif not exhausted:
                spec = next(source, None)
                if spec is None:
                    exhausted = True
                else:
                    item = _Item(spec)
            if item is None:
                if not self._heap and not self._tasks:
                    return
                await self._wait(self._heap[0][0] - now if self._heap else None)
                continue
            est = self._est_cost(item.spec) if self._est_cost is not None else 0.0
            if (
                self._max_cost is not None
                and self.stats.cost + self._reserved + est > self._max_cost
            ):
                if self._tasks:
                    # In-flight estimates assume the longest answers; let them land and count
                    # what they really cost before deciding the cap is reached.
                    self._seq += 1
                    heapq.heappush(self._heap, (now, self._seq, item))
                    await self._wait(None)
                    continue
                self._stop = (
                    f"cost cap: ${self.stats.cost:.4f} spent, ${self._reserved:.4f} in flight, "
                    f"the next request would pass --max-cost ${self._max_cost:g}"
                )
                self.stats.stopping = "cost cap"
                return
            try:
                lease = await self._pool.acquire(item.spec.est_prompt_tokens, self._max_tokens)
            except RunStopped as e:
                self._stop = str(e)
                self.stats.stopping = "no usable key"
                return
            self._journal.mark_sent(item.spec.index)
            self._journaled()  # queued ahead of the task below: "sent" lands before it leaves
            self._reserved += est
            self.stats.in_flight += 1
            task = asyncio.ensure_future(self._attempt(item, lease, est))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attempt(self, item: _Item, lease: Lease, est: float) -> None:
        spec = item.spec
        slot = lease.slot
        item.attempts.total += 1
        model = slot.model if slot.endpoint.model or not spec.model else spec.model
        body = jsoncodec.dumps_body({"model": model, **spec.body})
        started = self._clock.now()
        try:
            try:
                completion, rate = await self._transport.send(slot.target, body)
            except RequestError as error:
                self._pool.release_error(lease, error, error.rate)
                self._on_error(item, error, slot.endpoint.name)
                return
            latency = self._clock.now() - started
            self._journal.record_success(
                spec.index,
                completion,
                latency_s=latency,
                attempts=item.attempts.total,
                endpoint=slot.endpoint.name,
                model=model,
            )
            self._journaled()
            self._pool.release_ok(lease, completion, rate)
            st = self.stats
            st.done += 1
            pt = completion.prompt_tokens or 0
            ct = completion.completion_tokens or 0
            st.prompt_tokens += pt
            st.completion_tokens += ct
            if self._cost is not None:
                st.cost += self._cost(model, pt, ct)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a journal that cannot write must stop the run
            self._failure = e
            self.request_stop(f"internal error: {e}")
        finally:
            self.stats.in_flight -= 1
            self._reserved -= est
            # Leave the task set before waking the dispatcher: it checks the set to know
            # whether the run is over, and a done-callback would run too late.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]  # current_task is this Task[None]
            self._wake()

    def _on_error(self, item: _Item, error: RequestError, endpoint: str) -> None:
        info = ErrorInfo(error.kind, error.status, error.message)
        decision = self._retry.decide(error, item.attempts)
        self.stats.errors[error.kind] += 1
        self._journaled()
        if decision.retry:
            self._journal.record_retry(item.spec.index, info)
            self.stats.retries += 1
            self._seq += 1
            heapq.heappush(self._heap, (self._clock.now() + decision.delay, self._seq, item))
            return
        self._journal.record_failure(
            item.spec.index,
            info,
            attempts=item.attempts.total,
            endpoint=endpoint,
            retryable=isinstance(error, RetryableError),
        )
        self.stats.failed += 1


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
