"""The driver of a run on Ray: rows out to the workers, events back into the journal.

The driver keeps the journal, as a local run does, and is the only process that writes it.
It reads the rows to do from the journal, marks each batch's rows sent (committed) before
handing the batch to a worker, and records the events each worker streams back (answers,
retries, failures) before they count. So:

- `kill -9` of the driver loses only what was in flight: those rows are SENT in the journal
  and the same command sends them again (the workers die with the driver's job);
- a worker (or its node) that dies loses only its batches' rows not answered yet: they are
  handed to another worker, and no row journaled done is asked for again.

Batches are small (`BATCH_ROWS`) and each worker holds at most `DEPTH` of them, so memory
stays flat on the driver and on every worker however long the input.

`--max-cost` is held here, where the spend is counted: a row is handed out only while what
was spent, plus the most each row out may cost (its prompt and the longest answer allowed),
plus its own most stays under the cap. A row that does not fit waits for the rows out to
land with what they really cost; with none out, the run stops at the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..engine import EngineOutcome
from ..events import KeyState, KeyStats, RunStats
from ..journal import Journal
from ..records import RequestSpec
from .actors import Event, WorkerSetup
from .budget import KeyCounters
from .cluster import cluster_cpus, start_coordinator, start_worker

BATCH_ROWS = 64
"""Rows in one batch handed to a worker."""
DEPTH = 4
"""Batches a worker holds at once: enough to keep its keys busy while the next is sent."""


@dataclass
class _WorkerState:
    number: int
    handle: Any
    busy: int = 0
    done: int = 0
    alive: bool = True
    rows: set[int] = field(default_factory=set)


class RayDriver:
    """Runs the rows still to do over Ray workers (see the module docstring).

    Args:
        ray: the connected `ray` module.
        jr: the run's journal (open, ingested).
        setup: what each worker sends with.
        workers: how many workers to start.
        run_id: names the run's actors.
        stats: the live counters (the display reads them).
        cost: what an answer costs (model, prompt, completion tokens).
        max_cost: stop handing out rows before the spend could pass this (USD).
        est_cost: the most a row may cost; required with `max_cost`.
    """

    def __init__(
        self,
        ray: Any,
        jr: Journal,
        *,
        setup: WorkerSetup,
        workers: int,
        run_id: str,
        stats: RunStats,
        cost: Callable[[str, int, int], float],
        max_cost: float | None = None,
        est_cost: Callable[[RequestSpec], float] | None = None,
    ) -> None:
        self._ray = ray
        self._jr = jr
        self._setup = setup
        self._n = max(1, workers)
        self._run_id = run_id
        self._stats = stats
        self._cost = cost
        self._stop: str | None = None
        self._cut = False
        self._coordinator: Any = None
        self._workers: list[_WorkerState] = []
        self._redo: deque[RequestSpec] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._key_stats: list[KeyCounters] = []
        self._lost_workers = 0
        if max_cost is not None and est_cost is None:
            raise ValueError("max_cost needs est_cost")
        self._max_cost = max_cost
        self._est_cost = est_cost
        self._reserved: dict[int, float] = {}  # row -> the most it may cost, while out

    # -- control ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop handing out rows; the workers finish the batches they hold."""
        if self._stop is None:
            self._stop = reason
            self._stats.stopping = reason

    def cut(self) -> None:
        """Stop at once: batches in flight are abandoned (their rows stay SENT: sent again)."""
        self._cut = True
        for t in list(self._tasks):
            t.cancel()

    # -- the display ------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Return one line per worker for the live display."""
        return [
            f"worker {w.number}: {'alive' if w.alive else 'lost'}, {w.done} done, "
            f"{len(w.rows)} rows held"
            for w in self._workers
        ]

    def keys(self) -> tuple[KeyStats, ...]:
        """Return each key's cluster-wide counters, as the coordinator last gave them."""
        out = []
        for key, state, in_flight, ok, limited, errors, rpm, discovering in self._key_stats:
            spec = self._setup.keys[key]
            out.append(
                KeyStats(
                    label=key,
                    endpoint=spec.endpoint,
                    masked_key=spec.masked or key,
                    state=KeyState.DEAD if state == "dead" else KeyState.ACTIVE,
                    in_flight=in_flight,
                    sent=ok + limited + errors,
                    ok=ok,
                    rate_limited=limited,
                    errors=errors,
                    rpm=rpm,
                    tpm=spec.tpm,
                    discovering=discovering,
                    rate_now=0.0,
                    window=spec.concurrency,
                )
            )
        return tuple(out)

    # -- the run ---------------------------------------------------------------------------

    async def run(self, todo: Iterator[RequestSpec]) -> EngineOutcome:
        """Send every row `todo` yields through the workers; return how the run ended."""
        ray = self._ray
        self._coordinator = start_coordinator(ray, self._run_id, list(self._setup.keys.values()))
        # A worker waits on the network, not the CPU: more workers than CPUs share them.
        cpus = min(1.0, cluster_cpus(ray) / self._n)
        self._workers = [
            _WorkerState(
                i, start_worker(ray, self._run_id, i, self._setup, self._coordinator, cpus)
            )
            for i in range(1, self._n + 1)
        ]
        poller = asyncio.ensure_future(self._poll_keys())
        try:
            await self._dispatch(todo)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
            await self._shutdown()
        if self._stop is not None:
            return EngineOutcome(
                "interrupted" if self._stop == "interrupted" else "stopped", self._stop
            )
        if not any(w.alive for w in self._workers):
            return EngineOutcome("stopped", "every Ray worker was lost: run the same command")
        return EngineOutcome("completed")

    async def _dispatch(self, todo: Iterator[RequestSpec]) -> None:
        source_done = False
        while True:
            if self._stop is None:
                source_done = self._fill(todo) or source_done
            if not self._tasks:
                if self._stop is not None or (source_done and not self._redo):
                    return
                if not any(w.alive for w in self._workers):
                    return
                source_done = False  # rows came back from a lost worker: hand them out
                continue
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                self._tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    self.request_stop("error")
                    for other in self._tasks:
                        other.cancel()
                    raise t.exception()  # type: ignore[misc]

    def _fill(self, todo: Iterator[RequestSpec]) -> bool:
        """Hand out batches, one per worker in turn; return True once `todo` ran dry."""
        while True:
            room = [w for w in self._workers if w.alive and w.busy < DEPTH]
            if not room:
                return False
            for w in sorted(room, key=lambda w: w.busy):
                batch = self._next_batch(todo)
                if not batch:
                    # An empty batch leaves `_redo` empty unless --max-cost held rows back
                    # there: those are not the end of `todo`.
                    return not self._redo
                self._hand(w, batch)

    def _next_batch(self, todo: Iterator[RequestSpec]) -> list[RequestSpec]:
        batch: list[RequestSpec] = []
        while self._redo and len(batch) < BATCH_ROWS:
            batch.append(self._redo.popleft())
        for spec in todo:
            batch.append(spec)
            if len(batch) >= BATCH_ROWS:
                break
        if self._max_cost is not None:
            batch = self._within_cap(batch)
        return batch

    def _within_cap(self, batch: list[RequestSpec]) -> list[RequestSpec]:
        """Keep (and reserve) the rows of `batch` that fit under --max-cost.

        The others wait at the front of `_redo`. A batch returned is always handed out.
        """
        assert self._max_cost is not None and self._est_cost is not None
        room = self._max_cost - self._stats.cost - sum(self._reserved.values())
        fits = 0
        for spec in batch:
            est = self._est_cost(spec)
            room -= est
            if room < 0:
                break
            self._reserved[spec.index] = est
            fits += 1
        if fits < len(batch):
            self._redo.extendleft(reversed(batch[fits:]))  # first in line once room is back
            if fits == 0 and not self._tasks:
                # Nothing out whose real cost could free room: the cap is reached.
                self._stop = (
                    f"cost cap: ${self._stats.cost:.4f} spent, the next row would pass "
                    f"--max-cost ${self._max_cost:g}"
                )
                self._stats.stopping = "cost cap"
        return batch[:fits]

    def _hand(self, w: _WorkerState, batch: list[RequestSpec]) -> None:
        jr = self._jr
        for spec in batch:
            if spec.index not in w.rows:
                jr.mark_sent(spec.index)
        jr.commit()  # sent is durable before the batch leaves
        w.busy += 1
        w.rows.update(s.index for s in batch)
        self._stats.in_flight += len(batch)
        task = asyncio.ensure_future(self._follow(w, batch))
        self._tasks.add(task)

    async def _follow(self, w: _WorkerState, batch: list[RequestSpec]) -> None:
        """Record the events of one batch as they stream in; hand back what a lost worker held."""
        open_rows = {s.index: s for s in batch}
        try:
            gen = w.handle.process.options(num_returns="streaming").remote(batch)
            async for ref in gen:
                events: list[Event] = await ref
                self._apply(events, open_rows, w)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._lost(exc):
                raise  # an error in squall itself, not a lost process: stop the run
            if w.alive:
                w.alive = False
                self._lost_workers += 1
                # Its slots will never be reported back: free its share of each key.
                with contextlib.suppress(Exception):
                    self._coordinator.forget.remote(w.number)
                self._stats.notice(
                    f"Ray worker {w.number} was lost ({type(exc).__name__}): its "
                    f"{len(open_rows)} unanswered rows go to the other workers"
                )
            self._redo.extend(open_rows.values())
        finally:
            for index in open_rows:
                self._reserved.pop(index, None)
            w.busy -= 1
            w.rows.difference_update(s.index for s in batch)
            self._stats.in_flight -= len(batch)

    def _lost(self, exc: BaseException) -> bool:
        """True when `exc` says a worker's process or node is gone (not a bug of ours)."""
        errors = self._ray.exceptions
        lost = (
            errors.RayActorError,
            errors.ActorUnavailableError,
            errors.ObjectLostError,
            errors.NodeDiedError,
        )
        return isinstance(exc, lost)

    def _apply(
        self, events: list[Event], open_rows: dict[int, RequestSpec], w: _WorkerState
    ) -> None:
        jr, stats = self._jr, self._stats
        for ev in events:
            kind = ev[0]
            if kind == "ok":
                _, index, completion, latency, attempts, endpoint, model = ev
                jr.record_success(
                    index,
                    completion,
                    latency_s=latency,
                    attempts=attempts,
                    endpoint=endpoint,
                    model=model,
                )
                open_rows.pop(index, None)
                self._reserved.pop(index, None)
                w.done += 1
                stats.done += 1
                stats.prompt_tokens += completion.prompt_tokens or 0
                stats.completion_tokens += completion.completion_tokens or 0
                if model:
                    stats.cost += self._cost(
                        model, completion.prompt_tokens or 0, completion.completion_tokens or 0
                    )
            elif kind == "retry":
                _, index, error = ev
                jr.record_retry(index, error)
                jr.mark_sent(index)  # the worker's engine sends it again
                stats.retries += 1
                stats.errors[error.type] += 1
            elif kind == "fail":
                _, index, error, attempts, endpoint, retryable = ev
                jr.record_failure(
                    index, error, attempts=attempts, endpoint=endpoint, retryable=retryable
                )
                open_rows.pop(index, None)
                self._reserved.pop(index, None)
                stats.failed += 1
                stats.errors[error.type] += 1
            elif kind == "end" and ev[1] != "completed" and self._stop is None:
                self.request_stop(str(ev[2] or ev[1]))
        jr.commit()

    async def _poll_keys(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._key_stats = await self._coordinator.stats.remote()
            await asyncio.sleep(0.5)

    async def _shutdown(self) -> None:
        ray = self._ray
        for w in self._workers:
            if w.alive:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.handle.close.remote(), timeout=5.0)
        with contextlib.suppress(Exception):
            self._key_stats = await asyncio.wait_for(self._coordinator.stats.remote(), 5.0)
        for w in self._workers:
            with contextlib.suppress(Exception):
                ray.kill(w.handle)
        with contextlib.suppress(Exception):
            ray.kill(self._coordinator)
