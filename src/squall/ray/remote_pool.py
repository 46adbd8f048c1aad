"""`RemotePool`: the engine's `PoolPort` in a worker, leasing slots from the coordinator.

The engine in each worker asks this pool for a lease per request, as it asks the local pool;
this pool hands out slots it leased from the cluster's coordinator (`ClusterBudget`) a slice
at a time, and waits until a slot's time before handing it on, so the requests of every
worker on a key leave one pace apart. What each request taught (an answer, a 429, a dead key)
goes back to the coordinator with the next lease call, or at once for a 429 or a dead key:
the key's schedule then moves for every worker, and this worker drops the slots it still
holds on that key, so a cooled key sees no burst from here. The `x-ratelimit-*` headers go
back too: a limit they state with the next lease call (once per key and value), a budget
they say is spent at once, as a 429 does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from ..errors import RunStopped
from ..limits import RateInfo
from ..ports import Lease, Refusal, Usage
from .budget import KeyBudget, PerKind, Report, Slot

LeaseFn = Callable[[int, float, list[Report]], Awaitable[tuple[list[Slot], int]]]
"""Asks the coordinator for `n` slots of `tokens`, handing it reports; returns (slots, keys
alive)."""
ReportFn = Callable[[list[Report]], Awaitable[None]]

RETRY_EMPTY_S = 0.02
"""How long to wait before asking again when the coordinator had no slot to give."""


class RemotePool:
    """A `PoolPort` over the cluster's coordinator (see the module docstring).

    Args:
        lease: the coordinator's lease call.
        report: the coordinator's report call (for what must be known at once).
        keys: each key's limits and model, by key id.
        slice_size: the most slots asked for at once.
        now: the clock the pool and the engine share (monotonic seconds).
    """

    def __init__(
        self,
        lease: LeaseFn,
        report: ReportFn,
        keys: Mapping[str, KeyBudget],
        *,
        slice_size: int = 32,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lease = lease
        self._report = report
        self._keys = dict(keys)
        self._slice = slice_size
        self._now = now
        self._slots: deque[Slot] = deque()
        self._reports: list[Report] = []
        self._waiting = 0
        self._refill: asyncio.Lock | None = None
        self._alive = len(keys)
        self.max_in_flight = sum(k.concurrency for k in keys.values())
        # The tokens an answer is expected to use when no max_tokens bounds it (as a local
        # key learns it): a booking of the prompt alone would let a tpm limit be passed.
        self._completion_mean = 64.0
        # The limits each key's headers last stated, as reported: told once, not per answer.
        self._told: dict[str, PerKind] = {}

    async def acquire(self, prompt_tokens: int, max_tokens: int | None) -> Lease:
        """Wait for a slot on some key; return its lease when its time has come.

        Raises:
            RunStopped: every key is dead.
        """
        answer = self._completion_mean if max_tokens is None else max_tokens
        tokens = float(prompt_tokens + answer)
        self._waiting += 1
        try:
            while not self._slots:
                await self._fill(tokens)
            slot = self._slots.popleft()
        finally:
            self._waiting -= 1
        delay = slot.at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        spec = self._keys[slot.key]
        return Lease(
            slot.key, spec.endpoint, spec.model, slot.tokens, self._now(), pinned=spec.pinned
        )

    async def _fill(self, tokens: float) -> None:
        if self._refill is None:
            self._refill = asyncio.Lock()
        async with self._refill:
            if self._slots:
                return
            if self._alive == 0:
                raise RunStopped("every key was refused (401/403): check the keys")
            reports, self._reports = self._reports, []
            want = min(self._slice, max(1, self._waiting))
            slots, self._alive = await self._lease(want, tokens, reports)
            if self._alive == 0 and not slots:
                raise RunStopped("every key was refused (401/403): check the keys")
            if not slots:
                await asyncio.sleep(RETRY_EMPTY_S)
            self._slots.extend(slots)

    async def release_ok(self, lease: Lease, usage: Usage, rate: RateInfo | None) -> None:
        """Hand back a lease after an answer; the tokens used correct the key's booking."""
        if usage.completion_tokens is not None:
            self._completion_mean += 0.1 * (usage.completion_tokens - self._completion_mean)
        used = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0)
        delta = float(used) - lease.tokens if usage.prompt_tokens is not None else 0.0
        limits, spent = self._headers(lease.key, rate)
        report = Report(lease.key, "ok", token_delta=delta, limits=limits, spent=spent)
        if spent is None:
            self._reports.append(report)
        else:
            await self._urgent(lease.key, report)

    def _headers(self, key: str, rate: RateInfo | None) -> tuple[PerKind | None, PerKind | None]:
        """Return what an answer's rate-limit headers teach: new limits, a spent budget."""
        if rate is None:
            return None, None
        limits: PerKind | None = None
        stated = (rate.limit_requests or None, rate.limit_tokens or None)
        if stated != (None, None) and self._told.get(key) != stated:
            self._told[key] = limits = stated
        req = rate.reset_requests_s if rate.remaining_requests == 0 else None
        tok = rate.reset_tokens_s if rate.remaining_tokens == 0 else None
        return limits, ((req, tok) if req or tok else None)

    async def release_error(self, lease: Lease, refusal: Refusal) -> None:
        """Hand back a lease after a failure; a 429 or a dead key is told to all at once."""
        if refusal.rate_limited:
            report = Report(lease.key, "rate_limited", retry_after=refusal.retry_after)
        elif refusal.dead_key:
            report = Report(lease.key, "dead")
        else:
            self._reports.append(Report(lease.key, "error"))
            return
        await self._urgent(lease.key, report)

    async def _urgent(self, key: str, report: Report) -> None:
        """Tell the coordinator at once, giving back this worker's other slots on `key`.

        They were booked before the key was cooled (or died, or spent its budget) and
        would only meet the same answer.
        """
        dropped = [s for s in self._slots if s.key == key]
        self._slots = deque(s for s in self._slots if s.key != key)
        urgent = [report, *(Report(s.key, "unused") for s in dropped), *self._reports]
        self._reports = []
        await self._report(urgent)

    async def close(self) -> None:
        """Give back every slot not used, with the reports not sent yet."""
        unused = [Report(s.key, "unused") for s in self._slots]
        self._slots.clear()
        reports, self._reports = [*self._reports, *unused], []
        if reports:
            await self._report(reports)
