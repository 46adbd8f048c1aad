"""The endpoint pool: every key of every endpoint, and which one each request goes to.

`EndpointPool` implements the engine's `PoolPort`. `acquire()` returns a lease on the key
where the request can start soonest (not round-robin), booking its pace; `release_*()` hands
back what the answer taught: tokens actually used, rate-limit headers, a 429's Retry-After (or,
for a 429 that came from too many requests in flight, a narrower concurrency window), a dead
key, a refusing endpoint. Each key's learning lives in `keyslot.KeySlot`, each endpoint's
outages in `health.EndpointHealth`; the pool only chooses and books.

Any number of callers may wait in `acquire()` at once (several dispatchers, or several
engines sharing one pool): they are served in arrival order. The pool holds no secret (a
lease names its key by id) and is given a Clock; it never reads the time itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from .clock import Clock, Waker
from .config import EndpointConfig, KeyConfig, RunConfig
from .errors import RunStopped
from .events import KeyState, KeyStats
from .health import EndpointHealth
from .keyslot import KeySlot
from .limits import RateInfo
from .ports import Lease, Refusal, Usage

__all__ = ["EndpointPool", "KeySlot", "KeyState", "KeyStats", "Lease", "iter_keys"]


def iter_keys(config: RunConfig) -> Iterator[tuple[str, EndpointConfig, KeyConfig]]:
    """Yield (key id, endpoint, key) for every key of every endpoint.

    The ids are those the pool's leases carry; the wiring builds the transport's table of
    credentials from them.
    """
    seen: set[str] = set()
    for ep in config.endpoints:
        for i, key in enumerate(ep.keys):
            label = key.name or (ep.name if len(ep.keys) == 1 else f"{ep.name}#{i + 1}")
            key_id, n = label, 1
            while key_id in seen:  # two keys given the same name must still be told apart
                n += 1
                key_id = f"{label}~{n}"
            seen.add(key_id)
            yield key_id, ep, key


class EndpointPool:
    """All keys of all endpoints; hands out the key that can start soonest."""

    def __init__(
        self,
        slots: Sequence[KeySlot],
        clock: Clock,
        notify: Callable[[str], None] = lambda _msg: None,
        *,
        unreachable_after_s: float = 300.0,
    ) -> None:
        if not slots:
            raise RunStopped("the pool has no key: add keys to [[endpoints]]")
        self.slots = list(slots)
        self._by_key = {s.key_id: s for s in self.slots}
        self._clock = clock
        self._notify = notify
        self.health = EndpointHealth(
            notify,
            unreachable_after_s=unreachable_after_s,
            urls={s.endpoint: s.base_url for s in self.slots},
        )
        self._changed = Waker(clock)
        self._queue: deque[object] = deque()  # callers waiting in acquire(), in arrival order

    @classmethod
    def from_config(
        cls, config: RunConfig, clock: Clock, notify: Callable[[str], None] = lambda _m: None
    ) -> EndpointPool:
        """Build a slot for every key of every endpoint in `config`."""
        slots = [KeySlot(kid, ep, key, config.model_for(ep)) for kid, ep, key in iter_keys(config)]
        return cls(slots, clock, notify, unreachable_after_s=config.unreachable_after_s)

    @property
    def max_in_flight(self) -> int:
        """The most requests the pool can have in flight at once."""
        return sum(s.max_concurrency for s in self.slots)

    def slot(self, key_id: str) -> KeySlot:
        """Return the slot of the key a lease names."""
        return self._by_key[key_id]

    def live(self) -> bool:
        """True while at least one key is not dead."""
        return any(not s.dead for s in self.slots)

    # -- acquiring -------------------------------------------------------------------------------

    async def acquire(self, prompt_tokens: int, max_tokens: int | None) -> Lease:
        """Wait until some key can start this request, book it there, and return the lease.

        Raises:
            RunStopped: every key is dead (401/403), or no endpoint has been reachable for
                `unreachable_after_s`; nothing more can be sent.
        """
        if not self._queue:
            lease, _at = self._try_book(prompt_tokens, max_tokens)
            if lease is not None:
                return lease
        turn = object()
        self._queue.append(turn)
        try:
            while True:
                if self._queue[0] is not turn:
                    await self._changed.wait(None)  # not our turn: wait for the line to move
                    continue
                lease, at = self._try_book(prompt_tokens, max_tokens)
                if lease is not None:
                    return lease
                now = self._clock.now()
                self._check_usable(now)
                await self._changed.wait(None if math.isinf(at) else at - now)
        finally:
            self._queue.remove(turn)
            self._changed.wake()  # the next in line takes its turn

    def _try_book(self, prompt_tokens: int, max_tokens: int | None) -> tuple[Lease | None, float]:
        """Book the key that can start soonest if it can start now; else return when one can."""
        now = self._clock.now()
        best: KeySlot | None = None
        best_at = math.inf
        best_cost = 0.0
        health = self.health
        for slot in self.slots:
            cost = slot.cost(prompt_tokens, max_tokens)
            at = slot.ready_at(now, cost, health.rest_until(slot.endpoint))
            # Ties go to the key with more room, so load spreads over equal keys.
            if at < best_at or (best is not None and at == best_at and slot.room() < best.room()):
                best, best_at, best_cost = slot, at, cost
        if best is None or best_at > now + best.early_s:
            return None, best_at
        return best.book(now, best_cost, probe=health.start_probe(best.endpoint)), now

    def _check_usable(self, now: float) -> None:
        if not self.live():
            raise RunStopped(
                "no usable key left: every key answered 401/403; check the keys "
                "(the warnings above name them, masked) and rerun to resume"
            )
        self.health.check_reachable((s.endpoint for s in self.slots if not s.dead), now)

    # -- releasing -------------------------------------------------------------------------------

    async def release_ok(self, lease: Lease, usage: Usage, rate: RateInfo | None) -> None:
        """Return a lease after a successful answer."""
        slot = self._by_key[lease.key]
        slot.on_success(lease, usage, self._clock.now())
        if lease.probe:
            self.health.end_probe(lease.endpoint)
        self.health.answered(lease.endpoint)
        if rate is not None:
            slot.on_headers(rate, self._clock.now())
        self._changed.wake()

    async def release_error(self, lease: Lease, refusal: Refusal) -> None:
        """Return a lease after a failed request; the key or endpoint learns from it."""
        slot = self._by_key[lease.key]
        now = self._clock.now()
        if lease.probe:
            self.health.end_probe(lease.endpoint)
        if refusal.status is not None:  # an HTTP answer: the endpoint is reachable again
            self.health.answered(lease.endpoint)
        if refusal.rate is not None:
            slot.on_headers(refusal.rate, now)
        if refusal.rate_limited:
            notice = slot.on_rate_limited(lease, refusal, now)
            if notice is not None:
                self._notify(notice)
        else:
            slot.on_error()
            if refusal.dead_key and slot.on_dead():
                others = "its work goes to the other keys" if self.live() else "no key is left"
                self._notify(
                    f"key {slot.label} ({slot.masked}) answered HTTP {refusal.status}: "
                    f"removed from the pool; {others}"
                )
            elif refusal.refused:
                self.health.refused(lease.endpoint, now, lease.started)
        self._changed.wake()

    # -- reading ---------------------------------------------------------------------------------

    def statistics(self) -> tuple[KeyStats, ...]:
        """Return a snapshot of every key."""
        now = self._clock.now()
        return tuple(s.statistics(now, self.health.resting(s.endpoint, now)) for s in self.slots)
