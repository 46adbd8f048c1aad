"""Per-key limits the simulator enforces: requests and tokens per minute, requests in flight.

Two ways to enforce a per-minute limit, chosen per key (`SimKey.limit_mode`):

- "bucket" (the default): a token bucket over a short window, as many providers enforce
  per-minute limits. A key with `rpm` refills rpm/60 requests a second into a bucket of
  `max(1, rpm/60 * burst_s)`, so a 600-rpm key refuses the 11th request sent within a tenth
  of a second. A request larger than the bucket passes when the bucket is full and leaves it
  in debt.
- "sliding": a sliding window of `window_s` seconds, as providers that count every request
  of the last second (or minute) do: any `window_s` seconds hold at most
  `max(1, limit * window_s / 60)` requests (or tokens). Jitter that a bucket absorbs, say two
  bursts half a window apart, is refused here. A request larger than the window passes only
  when the window is empty.

`tpm` works the same way in both modes, charging each request its cost up front. Refused
requests cost nothing. Everything here runs on the simulator's loop and only computes: the
time comes in as `now`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal, NamedTuple, Protocol

from ..redact import mask_key
from .settings import LimitMode, SimKey

# Float slack when comparing a window's total with its capacity (e.g. 0.1 * 30 windows).
_EPS = 1e-9


def format_duration(seconds: float) -> str:
    """Return `seconds` as OpenAI writes durations in headers: "20ms", "1s", "1.5s", "6m0s"."""
    total_ms = math.ceil(max(0.0, seconds) * 1000)
    if total_ms < 1000:
        return f"{total_ms}ms" if total_ms else "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class RateLimit(Protocol):
    """One per-minute limit of one key (requests or tokens), in either mode."""

    limit_per_min: float

    def wait_s(self, amount: int, now: float) -> float:
        """Return seconds until `amount` fits (0 when it fits now)."""
        ...

    def take(self, amount: int, now: float) -> None:
        """Spend `amount`, which `wait_s` said fits now."""
        ...

    def remaining_per_min(self, now: float) -> int:
        """Return what is left, in per-minute units, comparable with `limit_per_min`."""
        ...

    def reset_s(self, now: float) -> float:
        """Return seconds until the limit is back to its full allowance."""
        ...

    def changed_to(self, per_minute: float, now: float) -> RateLimit:
        """Return this limit with a new rate, keeping what was already spent."""
        ...


class Bucket:
    """A token bucket: `rate` per second into `capacity`, starting full."""

    __slots__ = ("burst_s", "capacity", "level", "limit_per_min", "rate", "stamp")

    def __init__(self, per_minute: float, burst_s: float, now: float) -> None:
        self.limit_per_min = per_minute
        self.burst_s = burst_s
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self, amount: int, now: float) -> float:
        """Return seconds until `amount` fits (0 when it fits now)."""
        self._refill(now)
        need = min(amount, self.capacity)  # larger requests pass on a full bucket
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: int, now: float) -> None:
        """Spend `amount` (the bucket may go into debt)."""
        self.level -= amount

    def remaining_per_min(self, now: float) -> int:
        """Return what is left in per-minute units, as of the last request taken."""
        # Per-minute units so `remaining` is comparable with `limit`, and reaches 0 exactly
        # when the next request would be refused. Not refilled to `now`, as before the split.
        return max(0, math.floor(self.level / self.capacity * self.limit_per_min))

    def reset_s(self, now: float) -> float:
        """Return seconds until the bucket is full again, as of the last request taken."""
        return max(0.0, self.capacity - self.level) / self.rate

    def changed_to(self, per_minute: float, now: float) -> Bucket:
        """Return a bucket of the new rate holding no more than this one holds now."""
        new = Bucket(per_minute, self.burst_s, now)
        self._refill(now)
        new.level = min(new.capacity, self.level)
        return new


class SlidingWindow:
    """A sliding window: any `window_s` seconds hold at most `capacity` of what is taken."""

    __slots__ = ("capacity", "limit_per_min", "taken", "total", "window_s")

    def __init__(self, per_minute: float, window_s: float) -> None:
        self.limit_per_min = per_minute
        self.window_s = window_s
        self.capacity = max(1.0, per_minute * window_s / 60.0)
        self.taken: deque[tuple[float, int]] = deque()  # (when, amount), oldest first
        self.total = 0  # sum of the amounts in `taken`; ints, so it never drifts

    def _expire(self, now: float) -> None:
        # An amount taken at t counts until t + window_s (exclusive), as max_in_window counts.
        edge = now - self.window_s
        while self.taken and self.taken[0][0] <= edge:
            self.total -= self.taken.popleft()[1]

    def wait_s(self, amount: int, now: float) -> float:
        """Return seconds until `amount` fits in the window (0 when it fits now)."""
        self._expire(now)
        if self.total + amount <= self.capacity + _EPS or not self.taken:
            return 0.0  # an amount above capacity passes on an empty window
        # Walk from the oldest: the window frees up when enough has left it.
        left = self.total
        for when, spent in self.taken:
            left -= spent
            if left + amount <= self.capacity + _EPS or left == 0:
                # Positive by construction; floored so a float edge never says "now".
                return max(1e-6, when + self.window_s - now)
        raise AssertionError("unreachable: an empty window always fits")

    def take(self, amount: int, now: float) -> None:
        """Spend `amount` at `now`."""
        self.taken.append((now, amount))
        self.total += amount

    def remaining_per_min(self, now: float) -> int:
        """Return what the window has left, in per-minute units."""
        self._expire(now)
        left = max(0.0, self.capacity - self.total)
        return max(0, math.floor(left / self.capacity * self.limit_per_min))

    def reset_s(self, now: float) -> float:
        """Return seconds until the window is empty."""
        self._expire(now)
        return max(0.0, self.taken[-1][0] + self.window_s - now) if self.taken else 0.0

    def changed_to(self, per_minute: float, now: float) -> SlidingWindow:
        """Return a window of the new rate holding what this one holds."""
        new = SlidingWindow(per_minute, self.window_s)
        self._expire(now)
        new.taken, new.total = deque(self.taken), self.total
        return new


def new_limit(
    per_minute: float, mode: LimitMode, *, burst_s: float, window_s: float, now: float
) -> RateLimit:
    """Return a fresh (full) limit of `per_minute` enforced the `mode` way."""
    if mode == "sliding":
        return SlidingWindow(per_minute, window_s)
    return Bucket(per_minute, burst_s, now)


RefusalKind = Literal["concurrency", "requests", "tokens"]


class Refusal(NamedTuple):
    """Why a request may not pass its key's limits, and seconds until it could."""

    kind: RefusalKind
    wait_s: float


class KeyState:
    """Live state of one key: its limits and in-flight count (touched only on the loop)."""

    __slots__ = (
        "burst_s",
        "dead",
        "forbidden",
        "in_flight",
        "key",
        "masked",
        "max_concurrency",
        "mode",
        "requests",
        "tokens",
        "window_s",
    )

    def __init__(self, spec: SimKey, burst_s: float, now: float) -> None:
        self.key = spec.key
        self.masked = mask_key(spec.key)
        self.dead = spec.dead
        self.forbidden = spec.forbidden
        self.max_concurrency = spec.max_concurrency
        self.mode: LimitMode = spec.limit_mode
        self.burst_s = burst_s
        self.window_s = spec.window_s
        self.requests = self._limit(spec.rpm, now)
        self.tokens = self._limit(spec.tpm, now)
        self.in_flight = 0

    def _limit(self, per_minute: float | None, now: float) -> RateLimit | None:
        if not per_minute:
            return None
        return new_limit(
            per_minute, self.mode, burst_s=self.burst_s, window_s=self.window_s, now=now
        )

    @property
    def has_rate_limits(self) -> bool:
        """Whether requests or tokens per minute are limited (the clock is read only then)."""
        return self.requests is not None or self.tokens is not None

    def take(self, cost: int, now: float, busy_retry_after_s: float) -> Refusal | None:
        """Take one request and `cost` tokens from the key's limits, or say why not."""
        if self.max_concurrency is not None and self.in_flight >= self.max_concurrency:
            return Refusal("concurrency", busy_retry_after_s)
        requests, tokens = self.requests, self.tokens
        if requests is not None:
            wait = requests.wait_s(1, now)
            if wait > 0:
                return Refusal("requests", wait)
        if tokens is not None:
            wait = tokens.wait_s(cost, now)
            if wait > 0:
                return Refusal("tokens", wait)
            tokens.take(cost, now)
        if requests is not None:
            requests.take(1, now)
        return None

    def set_limit(
        self, which: Literal["requests", "tokens"], per_minute: float | None, now: float
    ) -> None:
        """Change the requests or tokens limit from now on (None: unlimited)."""
        old: RateLimit | None = getattr(self, which)
        if per_minute is None:
            new = None
        elif old is not None:  # a changed limit keeps what was already spent
            new = old.changed_to(per_minute, now)
        else:
            new = self._limit(per_minute, now)
        setattr(self, which, new)

    def ratelimit_headers(self, headers: dict[str, str], now: float) -> None:
        """Add OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens} to `headers`."""
        for name, limit in (("requests", self.requests), ("tokens", self.tokens)):
            if limit is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(int(limit.limit_per_min))
                headers[f"x-ratelimit-remaining-{name}"] = str(limit.remaining_per_min(now))
                headers[f"x-ratelimit-reset-{name}"] = format_duration(limit.reset_s(now))
