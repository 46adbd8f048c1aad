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

An operation that packs rows (embeddings, `packing=`) sends many rows a request: the dispatcher
groups the rows with the operation's `pack` (by count, estimated tokens and settings), and a
pack is one item: one lease booked for the sum of its rows' tokens, one request, one retry
budget. Every row of it is marked sent before it leaves, and each row's answer (its vector,
matched by index, and its share of the usage) is journaled as its own. A retryable error sends
the whole pack again (a retry of each row); a pack refused as a bad request (400, 422, content
filtered) is split in halves that are sent again at once, spending no retry budget (the
journal records a retry of each row, as it was sent and refused), until the bad row is alone
and fails by itself: a pack of n with one bad row costs about 2 log2 n more requests. A row's
`attempts` is the number of requests that carried it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from . import jsoncodec
from .clock import Clock, Waker
from .errors import BadRequest, ContentFiltered, RequestError, RetryableError, RunStopped
from .events import RunStats
from .operations import PackedOperation
from .operations.embeddings import spec_key, split
from .ports import JournalPort, Lease, PoolPort, Refusal, TransportPort, Usage
from .records import ErrorInfo, RequestSpec
from .retry import Attempts, RetryPolicy

CostFn = Callable[[str, int, int], float]
"""(model, prompt_tokens, completion_tokens) -> USD."""


@dataclass(slots=True)
class _Item:
    spec: RequestSpec
    attempts: Attempts = field(default_factory=Attempts)


@dataclass(slots=True)
class _Pack:
    """Rows sent in one request (embeddings): one lease, one retry budget."""

    specs: list[RequestSpec]
    tokens: int
    attempts: Attempts = field(default_factory=Attempts)


def _pack(specs: list[RequestSpec], attempts: Attempts | None = None) -> _Pack:
    tokens = sum(s.est_prompt_tokens for s in specs)
    return _Pack(specs, tokens, Attempts() if attempts is None else replace(attempts))


async def _all(calls: Iterable[Awaitable[None]]) -> None:
    """Await every call at once: a journal commits them in one turn, not one turn each."""
    await asyncio.gather(*calls)


def _same(text: str) -> str:
    return text


_ROW_FAULTS = (BadRequest, ContentFiltered)
"""Errors that blame a row, not the request: a pack refused so is split to find the row."""


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
        packing: PackedOperation | None = None,
        redact: Callable[[str], str] = _same,
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
        self._packing = packing
        self._redact = redact  # masks secrets in a pack's unreadable answer
        self._heap: list[tuple[float, int, _Item | _Pack]] = []
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
        source: Iterator[Any] = iter(specs)
        if self._packing is not None:
            source = self._packing.pack(specs, key=spec_key)
        self._dispatcher = asyncio.ensure_future(self._dispatch(source))
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

    async def _dispatch(self, source: Iterator[Any]) -> None:
        """Send what `source` yields: RequestSpecs, or lists of them when packing."""
        exhausted = False
        packing = self._packing is not None
        while self._stop is None and self._failure is None:
            now = self._clock.now()
            item: _Item | _Pack | None = None
            if self._heap and self._heap[0][0] <= now:
                item = heapq.heappop(self._heap)[2]
            elif not exhausted:
                spec = next(source, None)
                if spec is None:
                    exhausted = True
                else:
                    item = _pack(spec) if packing else _Item(spec)
            if item is None:
                if not self._heap and not self._tasks:
                    return
                await self._changed.wait(self._heap[0][0] - now if self._heap else None)
                continue
            if isinstance(item, _Pack):
                tokens = item.tokens
                est = sum(map(self._est_cost, item.specs)) if self._est_cost is not None else 0.0
            else:
                tokens = item.spec.est_prompt_tokens
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
                lease = await self._pool.acquire(tokens, self._max_tokens)
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
            if isinstance(item, _Pack):
                task = asyncio.ensure_future(self._attempt_pack(item, lease, est))
            else:
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
            self._landed(est)

    def _landed(self, est: float) -> None:
        """Count an attempt's task out of flight (in its `finally`)."""
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

    # -- packs (embeddings) ----------------------------------------------------------------

    async def _attempt_pack(self, item: _Pack, lease: Lease, est: float) -> None:
        op = self._packing
        assert op is not None
        specs = item.specs
        item.attempts.total += 1
        first = specs[0]
        model = lease.model if lease.pinned or not first.model else first.model
        journal = self._journal
        try:
            fields = op.pack_body([s.body for s in specs])
            dims = fields.get("dimensions")
            body = jsoncodec.dumps_body({"model": model, **fields})
            # Every row durable as sent before the pack leaves, in one commit.
            await _all(journal.mark_sent(s.index) for s in specs)
            started = self._clock.now()
            try:
                raw, rate = await self._transport.send_raw(lease, body)
                rows = op.parse_pack(
                    raw,
                    [s.est_prompt_tokens for s in specs],
                    self._redact,
                    dimensions=dims if type(dims) is int else None,
                )
            except RequestError as error:
                await self._pool.release_error(lease, Refusal.of(error))
                await self._on_pack_error(item, error, lease.endpoint)
                return
            latency = self._clock.now() - started
            shares = [r.prompt_tokens for r in rows]
            pt = None if None in shares else sum(t or 0 for t in shares)
            await self._pool.release_ok(lease, Usage(pt, None), rate)
            attempts = item.attempts.total
            await _all(
                journal.record_success(
                    s.index,
                    r.as_completion(),
                    latency_s=latency,
                    attempts=attempts,
                    endpoint=lease.endpoint,
                    model=model,
                )
                for s, r in zip(specs, rows, strict=True)
            )
            st = self.stats
            st.done += len(specs)
            st.prompt_tokens += pt or 0
            if self._cost is not None:
                st.cost += self._cost(model, pt or 0, 0)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a journal that cannot write must stop the run
            self._fail(e)
        finally:
            self._landed(est)

    async def _on_pack_error(self, item: _Pack, error: RequestError, endpoint: str) -> None:
        info = ErrorInfo(error.kind, error.status, error.message)
        decision = self._retry.decide(error, item.attempts)
        self.stats.errors[error.kind] += 1
        specs = item.specs
        now = self._clock.now()
        if decision.retry or (len(specs) > 1 and isinstance(error, _ROW_FAULTS)):
            await _all(self._journal.record_retry(s.index, info) for s in specs)
            self.stats.retries += 1
            if decision.retry:
                self._push(now + decision.delay, item)
            else:  # which row is bad is not known yet: each half is sent again, at once
                for half in split(specs):
                    self._push(now, _pack(half, item.attempts))
            return
        retryable = isinstance(error, RetryableError)
        await _all(
            self._journal.record_failure(
                s.index, info, attempts=item.attempts.total, endpoint=endpoint, retryable=retryable
            )
            for s in specs
        )
        self.stats.failed += len(specs)

    def _push(self, when: float, item: _Item | _Pack) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, item))
