"""The endpoint pool: every key of every endpoint, each with its own limits and state.

`EndpointPool.acquire()` returns a lease on the key where the request can start soonest (not
round-robin), booking its pace; `release_*()` hands back what the answer taught: tokens
actually used, rate-limit headers, a 429's Retry-After (or, for a 429 that came from too many
requests in flight, a narrower concurrency window), a dead key, a refusing endpoint.

One dispatcher calls `acquire()` at a time (the engine's), so waiters never stampede; the
pool is given a Clock and never reads the time itself.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from .clock import Clock
from .config import EndpointConfig, KeyConfig, RunConfig, is_unlimited
from .errors import AuthError, ConnectionLost, RateLimited, RequestError, RunStopped
from .limits import ConcurrencyWindow, Discovery, Pace, RateInfo
from .records import Completion
from .transport import Target, make_target

_REST_MAX_S = 60.0
_COOL_MAX_S = 60.0
_RECENT_S = 5.0  # the longest span rate_now() is asked about


class KeyState(str, Enum):
    """Where a key stands right now."""

    ACTIVE = "active"
    COOLING = "cooling"  # answered 429, or its remaining budget reached zero
    RESTING = "resting"  # its endpoint refused connections
    DEAD = "dead"  # answered 401/403: out of rotation for the rest of the run


@dataclass(frozen=True, slots=True)
class KeyStats:
    """A snapshot of one key, for progress and the account."""

    label: str
    endpoint: str
    masked_key: str
    state: KeyState
    in_flight: int
    sent: int
    ok: int
    rate_limited: int
    errors: int
    rpm: float | None
    tpm: float | None
    discovering: bool
    rate_now: float
    """Requests per second over the last few seconds."""
    window: int = 0
    """Requests it may have in flight now: its max_concurrency, or fewer once it refused more."""


class KeySlot:
    """One key of one endpoint, with its pace, concurrency and health."""

    def __init__(self, endpoint: EndpointConfig, key: KeyConfig, index: int, model: str) -> None:
        self.endpoint = endpoint
        self.label = key.name or (
            endpoint.name if len(endpoint.keys) == 1 else f"{endpoint.name}#{index + 1}"
        )
        self.masked = key.key.masked
        self.model = model
        self.target: Target = make_target(
            endpoint.base_url,
            key.key.reveal(),
            timeout_s=endpoint.timeout_s,
            extra_headers=endpoint.headers,
        )
        rpm = key.rpm if key.rpm is not None else endpoint.rpm
        tpm = key.tpm if key.tpm is not None else endpoint.tpm
        self.declared_rpm = None if rpm is None or is_unlimited(rpm) else rpm
        self.declared_tpm = None if tpm is None or is_unlimited(tpm) else tpm
        self.discovery: Discovery | None = Discovery() if rpm is None else None
        self.header_rpm: float | None = None
        self.header_tpm: float | None = None
        self.factor = 1.0  # shrinks when a declared limit still draws 429s
        self.requests = Pace(None)
        self.tokens = Pace(None)
        self.max_concurrency = key.max_concurrency or endpoint.max_concurrency
        # What the key accepts at once, at most max_concurrency: lower once it refuses more.
        self.window = ConcurrencyWindow(self.max_concurrency)
        self.window_told = self.max_concurrency  # the narrowest window a notice announced
        self.in_flight = 0
        self.blocked_until = 0.0
        self.cool_streak = 0
        self.dead = False
        self.completion_mean = 64.0
        self.sent = self.ok = self.rate_limited = self.errors = 0
        # Send times over the last _RECENT_S seconds: a time window, not a count, so the
        # rate a fast key reports (and the rate discovery observes at a 429) is not capped.
        self.recent: deque[float] = deque()
        self._apply_rates()

    def _apply_rates(self) -> None:
        rpm = self.declared_rpm
        if self.header_rpm is not None:
            rpm = self.header_rpm if rpm is None else min(rpm, self.header_rpm)
        if rpm is None and self.discovery is not None:
            rpm = self.discovery.rate
        self.requests.set_rate(None if rpm is None else rpm * self.factor)
        tpm = self.declared_tpm
        if self.header_tpm is not None:
            tpm = self.header_tpm if tpm is None else min(tpm, self.header_tpm)
        self.tokens.set_rate(None if tpm is None else tpm * self.factor)

    def cost(self, prompt_tokens: int, max_tokens: int | None) -> float:
        """Tokens to book for a request: the prompt plus the answer expected."""
        return prompt_tokens + (max_tokens if max_tokens is not None else self.completion_mean)

    def ready_at(self, now: float, cost: float, rest_until: float) -> float:
        """Return when this key could start a request of `cost` tokens (inf: not now)."""
        if self.dead or self.in_flight >= self.window.size:
            return math.inf
        return max(
            self.requests.ready_at(now),
            self.tokens.ready_at(now, cost),
            self.blocked_until,
            rest_until,
        )

    def note_sent(self, now: float) -> None:
        """Count one request sent at `now` (and forget those older than the longest span)."""
        recent = self.recent
        recent.append(now)
        while recent[0] < now - _RECENT_S:
            recent.popleft()

    def rate_now(self, now: float, span: float = _RECENT_S) -> float:
        """Return requests per second sent over the last `span` seconds (at most _RECENT_S)."""
        n = 0
        for t in reversed(self.recent):
            if now - t > span:
                break
            n += 1
        return n / span


@dataclass(slots=True)
class Lease:
    """A booked slot on one key: return it with one of the pool's `release_*` methods."""

    slot: KeySlot
    cost: float
    started: float
    probe: bool = False
    """The first request to an endpoint after it rested: the only one until it answers."""
    in_flight: int = 1
    """Requests in flight on the key when this one left, itself included."""


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
        self._clock = clock
        self._notify = notify
        self._rest_until: dict[str, float] = {}
        self._rest_began: dict[str, float] = {}
        self._rest_streak: dict[str, int] = {}
        self._probing: set[str] = set()
        self._down_since: dict[str, float] = {}  # first refusal of an outage not yet over
        self._unreachable_after_s = unreachable_after_s
        self._changed: asyncio.Future[None] | None = None

    @classmethod
    def from_config(
        cls, config: RunConfig, clock: Clock, notify: Callable[[str], None] = lambda _m: None
    ) -> EndpointPool:
        """Build a slot for every key of every endpoint in `config`."""
        slots = [
            KeySlot(ep, key, i, config.model_for(ep))
            for ep in config.endpoints
            for i, key in enumerate(ep.keys)
        ]
        return cls(slots, clock, notify, unreachable_after_s=config.unreachable_after_s)

    @property
    def max_in_flight(self) -> int:
        """The most requests the pool can have in flight at once."""
        return sum(s.max_concurrency for s in self.slots)

    def live(self) -> bool:
        """True while at least one key is not dead."""
        return any(not s.dead for s in self.slots)

    def _wake(self) -> None:
        fut = self._changed
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def acquire(self, prompt_tokens: int, max_tokens: int | None) -> Lease:
        """Wait until some key can start this request, book it there, and return the lease.

        Raises:
            RunStopped: every key is dead (401/403); nothing more can be sent.
        """
        while True:
            now = self._clock.now()
            best: KeySlot | None = None
            best_at = math.inf
            best_cost = 0.0
            for slot in self.slots:
                cost = slot.cost(prompt_tokens, max_tokens)
                name = slot.endpoint.name
                rest = math.inf if name in self._probing else self._rest_until.get(name, 0.0)
                at = slot.ready_at(now, cost, rest)
                # Ties go to the key with more room, so load spreads over equal keys.
                if at < best_at or (
                    best is not None
                    and at == best_at
                    and slot.in_flight / slot.window.size < best.in_flight / best.window.size
                ):
                    best, best_at, best_cost = slot, at, cost
            if best is not None and best_at <= now:
                return self._book(best, best_cost, now)
            if not self.live():
                raise RunStopped(
                    "no usable key left: every key answered 401/403; check the keys "
                    "(the warnings above name them, masked) and rerun to resume"
                )
            self._check_reachable(now)
            await self._wait(None if math.isinf(best_at) else best_at - now)

    def _check_reachable(self, now: float) -> None:
        """Raise RunStopped once every endpoint with a live key has refused connections for
        `unreachable_after_s`: waiting longer would only hold the run open."""
        endpoints = {s.endpoint.name for s in self.slots if not s.dead}
        since = [self._down_since.get(ep) for ep in endpoints]
        if endpoints and all(t is not None and now - t >= self._unreachable_after_s for t in since):
            raise RunStopped(
                f"no endpoint reachable for {self._unreachable_after_s:.0f}s: "
                f"{', '.join(sorted(endpoints))} refuse connections; start the server "
                "(or check base_url) and rerun to resume"
            )

    def _back(self, endpoint: str) -> None:
        """An endpoint answered (any HTTP status): its outage, if any, is over."""
        self._rest_streak.pop(endpoint, None)
        self._down_since.pop(endpoint, None)

    async def _wait(self, timeout: float | None) -> None:
        """Wait until a lease comes back or `timeout` seconds pass on the pool's Clock."""
        loop = asyncio.get_running_loop()
        self._changed = fut = loop.create_future()
        if timeout is None:
            await fut
            return
        # Time passes on the Clock, not the loop's timer, so a FakeClock drives the pool too.
        sleeper = loop.create_task(self._clock.sleep(max(timeout, 0.0)))
        sleeper.add_done_callback(lambda _t: _resolve(fut))
        try:
            await fut
        finally:
            sleeper.cancel()

    def _book(self, slot: KeySlot, cost: float, now: float) -> Lease:
        slot.requests.take(now)
        slot.tokens.take(now, cost)
        slot.in_flight += 1
        slot.sent += 1
        # After refusals, one request probes the endpoint; the rest wait for its answer rather
        # than each spending a try on a connection that will likely be refused again.
        probe = slot.endpoint.name in self._rest_streak
        if probe:
            self._probing.add(slot.endpoint.name)
        slot.note_sent(now)
        slot.window.on_sent(now, slot.in_flight)
        if slot.discovery is not None and slot.header_rpm is None:
            new = slot.discovery.on_sent(now, saturated=slot.requests.ready_at(now) > now)
            if new is not None:
                slot._apply_rates()
        return Lease(slot, cost, now, probe, slot.in_flight)

    def release_ok(self, lease: Lease, completion: Completion, rate: RateInfo | None) -> None:
        """Return a lease after a successful answer."""
        slot = lease.slot
        now = self._clock.now()
        slot.in_flight -= 1
        slot.ok += 1
        slot.window.on_ok(lease.in_flight)
        if lease.probe:
            self._probing.discard(slot.endpoint.name)
        slot.cool_streak = 0
        self._back(slot.endpoint.name)
        if completion.completion_tokens is not None:
            slot.completion_mean += 0.05 * (completion.completion_tokens - slot.completion_mean)
        if completion.prompt_tokens is not None and completion.completion_tokens is not None:
            slot.tokens.adjust(completion.prompt_tokens + completion.completion_tokens - lease.cost)
        if slot.factor < 1.0:
            slot.factor = min(1.0, slot.factor + 0.002)
            slot._apply_rates()
        if rate is not None:
            self._follow_headers(slot, rate, now)
        self._wake()

    def release_error(self, lease: Lease, error: RequestError, rate: RateInfo | None) -> None:
        """Return a lease after a failed request; the key or endpoint learns from it."""
        slot = lease.slot
        now = self._clock.now()
        slot.in_flight -= 1
        if lease.probe:
            self._probing.discard(slot.endpoint.name)
        if error.status is not None:  # an HTTP answer: the endpoint is reachable again
            self._back(slot.endpoint.name)
        if rate is not None:
            self._follow_headers(slot, rate, now)
        if isinstance(error, RateLimited):
            slot.rate_limited += 1
            if not self._too_many_at_once(slot, lease, error, now):
                self._cool(slot, error, now)
        elif isinstance(error, AuthError):
            slot.errors += 1
            if not slot.dead:
                slot.dead = True
                self._notify(
                    f"key {slot.label} ({slot.masked}) answered HTTP {error.status}: "
                    "removed from the pool; its work goes to the other keys"
                )
        elif isinstance(error, ConnectionLost) and error.refused:
            slot.errors += 1
            self._rest(slot.endpoint.name, now, lease.started)
        else:
            slot.errors += 1
        self._wake()

    def _too_many_at_once(
        self, slot: KeySlot, lease: Lease, error: RateLimited, now: float
    ) -> bool:
        """True when the 429 came from too many requests in flight: the window narrows instead
        of the key cooling. Only where the answer says so, or where no pace is in force on
        the key (so its rate cannot be what was refused)."""
        unpaced = slot.requests.per_minute is None and slot.tokens.per_minute is None
        if not (error.concurrency or unpaced):
            return False
        if not slot.window.on_refused(now, lease.in_flight, worded=error.concurrency):
            return False
        # Only a cut reaches below every window announced so far: growing back and probing
        # the old width again is not news.
        if slot.window.size < slot.window_told:
            slot.window_told = slot.window.size
            self._notify(
                f"key {slot.label} ({slot.masked}) refuses more than {slot.window.size} "
                f"request(s) at once: sending at most that many (it tries one more every "
                f"{ConcurrencyWindow.GROW_AFTER_S:.0f}s)"
            )
        return True

    def _cool(self, slot: KeySlot, error: RateLimited, now: float) -> None:
        slot.cool_streak += 1
        wait = error.retry_after
        if wait is None:
            wait = min(_COOL_MAX_S, 0.5 * 2 ** (slot.cool_streak - 1))
        until = now + wait
        # The rate this key really sent at: only since its last cooldown ended, since time
        # spent blocked would make the limit look lower than it is.
        since = max(now - 2.0, slot.blocked_until)
        observed = slot.rate_now(now, span=now - since) * 60.0 if now - since >= 0.5 else 0.0
        slot.blocked_until = max(slot.blocked_until, until)
        slot.requests.push_back(until)
        if slot.discovery is not None and slot.header_rpm is None:
            slot.discovery.on_rate_limited(now, observed)
            slot._apply_rates()
        elif slot.declared_rpm is not None or slot.header_rpm is not None:
            slot.factor = max(0.3, slot.factor * 0.9)
            slot._apply_rates()

    def _rest(self, endpoint: str, now: float, started: float) -> None:
        if started <= self._rest_began.get(endpoint, -math.inf):
            # Sent before the current rest began: the same outage, already counted. Counting
            # each refused request in flight would stretch one outage's rest to the maximum.
            return
        streak = self._rest_streak.get(endpoint, 0) + 1
        self._rest_streak[endpoint] = streak
        self._down_since.setdefault(endpoint, now)
        until = now + min(_REST_MAX_S, 2 ** (streak - 1))
        if until > self._rest_until.get(endpoint, 0.0):
            self._rest_until[endpoint] = until
            self._rest_began[endpoint] = now
            self._notify(f"endpoint {endpoint} refuses connections: resting it {until - now:.0f}s")

    def _follow_headers(self, slot: KeySlot, rate: RateInfo, now: float) -> None:
        changed = False
        if rate.limit_requests and rate.limit_requests != slot.header_rpm:
            slot.header_rpm = rate.limit_requests
            changed = True
        if rate.limit_tokens and rate.limit_tokens != slot.header_tpm:
            slot.header_tpm = rate.limit_tokens
            changed = True
        if changed:
            slot._apply_rates()
        for remaining, reset in (
            (rate.remaining_requests, rate.reset_requests_s),
            (rate.remaining_tokens, rate.reset_tokens_s),
        ):
            if remaining is not None and remaining <= 0 and reset:
                slot.blocked_until = max(slot.blocked_until, now + reset)

    def statistics(self) -> tuple[KeyStats, ...]:
        """Return a snapshot of every key."""
        now = self._clock.now()
        out = []
        for s in self.slots:
            rest = self._rest_until.get(s.endpoint.name, 0.0)
            if s.dead:
                state = KeyState.DEAD
            elif rest > now:
                state = KeyState.RESTING
            elif s.blocked_until > now:
                state = KeyState.COOLING
            else:
                state = KeyState.ACTIVE
            out.append(
                KeyStats(
                    label=s.label,
                    endpoint=s.endpoint.name,
                    masked_key=s.masked,
                    state=state,
                    in_flight=s.in_flight,
                    sent=s.sent,
                    ok=s.ok,
                    rate_limited=s.rate_limited,
                    errors=s.errors,
                    rpm=s.requests.per_minute,
                    tpm=s.tokens.per_minute,
                    discovering=s.discovery is not None and s.header_rpm is None,
                    rate_now=s.rate_now(now),
                    window=s.window.size,
                )
            )
        return tuple(out)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
