"""The engine: send every request where it can start soonest, record every answer, lose nothing.

The engine is given its parts through the ports in `ports.py` (a pool of keys, a transport, a
journal) plus a retry policy and a clock, and builds none of them; `runner.py` wires them. Every
call on a port is awaited, so a pool or journal living in another process (Ray) can stand in
without touching this file; `squall.testing` has doubles that prove it.

One dispatcher task takes the next request (a retry that is due first, else the next input
row), waits for a key to be free, and starts a task for it. Every task belongs to the engine's
task set, and none outlives `run()`. A task first awaits the journal's `mark_sent`, which
returns once "sent" is on disk, and only then lets the request leave; an answer is journaled
(and that awaited) before it counts as done. The local journal commits once per event-loop
turn however many changes the turn made, so awaiting durability costs little.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from . import jsoncodec
from .clock import Clock, Waker
from .errors import RequestError, RetryableError, RunStopped
from .events import RunStats
from .ports import JournalPort, Lease, PoolPort, Refusal, TransportPort, Usage
from .records import ErrorInfo, RequestSpec
from .retry import Attempts, RetryPolicy

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
        pool: PoolPort,
        transport: TransportPort,
        journal: JournalPort,
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
        self._changed = Waker(clock)
        self._dispatcher: asyncio.Task[None] | None = None
        self._cut = 0  # requests cut() abandoned in flight

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
            if not t.done():
                self._cut += 1
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
            await self._flush()
        if self._failure is not None:
            raise self._failure
        if self._stop is None:
            return EngineOutcome("completed")
        status = "interrupted" if self._interrupted else "stopped"
        return EngineOutcome(status, self._stop, cut)

    async def _drain(self) -> int:
        """Let in-flight requests land; return how many were cut.

        All of them land after a clean end; after Ctrl-C, those that do within the grace.
        """
        if not self._tasks:
            return self._cut
        if self._interrupted:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self._grace_s)
            return len(pending) + self._cut
        await asyncio.wait(set(self._tasks))
        return self._cut

    async def _flush(self) -> None:
        try:
            await self._journal.flush()
        except BaseException as e:  # a journal that cannot write must stop the run
            self._fail(e)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
        self.request_stop(f"internal error: {error}")

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
                await self._changed.wait(self._heap[0][0] - now if self._heap else None)
                continue
            est = self._est_cost(item.spec) if self._est_cost is not None else 0.0
            if self._over_cost_cap(est):
                if not self._tasks:
                    self._stop_at_cost_cap()
                    return
                # In-flight estimates assume the longest answers; let them land and count
                # what they really cost before deciding the cap is reached.
                self._seq += 1
                heapq.heappush(self._heap, (now, self._seq, item))
                await self._changed.wait(None)
                continue
            try:
                lease = await self._pool.acquire(item.spec.est_prompt_tokens, self._max_tokens)
            except RunStopped as e:
                self._stop = str(e)
                self.stats.stopping = "no usable key"
                return
            self._reserved += est
            self.stats.in_flight += 1
            # The task leaves the set itself (in `_attempt`'s finally), not by a done
            # callback: that would cost one more event-loop callback per request. A task
            # cancelled before it started stays in the set, which only `cut()` and the end
            # of `run()` do, and neither needs it gone.
            task = asyncio.ensure_future(self._attempt(item, lease, est))
            self._tasks.add(task)

    def _over_cost_cap(self, est: float) -> bool:
        """True when sending a request estimated at `est` could pass --max-cost."""
        return self._max_cost is not None and (
            self.stats.cost + self._reserved + est > self._max_cost
        )

    def _stop_at_cost_cap(self) -> None:
        assert self._max_cost is not None
        self._stop = (
            f"cost cap: ${self.stats.cost:.4f} spent, ${self._reserved:.4f} in flight, "
            f"the next request would pass --max-cost ${self._max_cost:g}"
        )
        self.stats.stopping = "cost cap"

    async def _attempt(self, item: _Item, lease: Lease, est: float) -> None:
        spec = item.spec
        item.attempts.total += 1
        model = lease.model if lease.pinned or not spec.model else spec.model
        body = jsoncodec.dumps_body({"model": model, **spec.body})
        try:
            # Durable before it leaves: a crash from here on shows the row as maybe billed.
            await self._journal.mark_sent(spec.index)
            started = self._clock.now()
            try:
                completion, rate = await self._transport.send(lease, body)
            except RequestError as error:
                await self._pool.release_error(lease, Refusal.of(error))
                await self._on_error(item, error, lease.endpoint)
                return
            latency = self._clock.now() - started
            pt = completion.prompt_tokens
            ct = completion.completion_tokens
            await self._pool.release_ok(lease, Usage(pt, ct), rate)
            await self._journal.record_success(
                spec.index,
                completion,
                latency_s=latency,
                attempts=item.attempts.total,
                endpoint=lease.endpoint,
                model=model,
            )
            st = self.stats
            st.done += 1
            st.prompt_tokens += pt or 0
            st.completion_tokens += ct or 0
            if self._cost is not None:
                st.cost += self._cost(model, pt or 0, ct or 0)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a journal that cannot write must stop the run
            self._fail(e)
        finally:
            self.stats.in_flight -= 1
            self._reserved -= est
            # Leave the task set before waking the dispatcher: it checks the set to know
            # whether the run is over, and a done-callback would run too late.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]  # current_task is this Task[None]
            self._changed.wake()

    async def _on_error(self, item: _Item, error: RequestError, endpoint: str) -> None:
        info = ErrorInfo(error.kind, error.status, error.message)
        decision = self._retry.decide(error, item.attempts)
        self.stats.errors[error.kind] += 1
        if decision.retry:
            await self._journal.record_retry(item.spec.index, info)
            self.stats.retries += 1
            self._seq += 1
            heapq.heappush(self._heap, (self._clock.now() + decision.delay, self._seq, item))
            return
        await self._journal.record_failure(
            item.spec.index,
            info,
            attempts=item.attempts.total,
            endpoint=endpoint,
            retryable=isinstance(error, RetryableError),
        )
        self.stats.failed += 1
