"""Per-key pacing: even spacing of requests and tokens, and finding limits nobody declared.

Providers enforce a per-minute limit over much shorter windows (a 600 rpm key may refuse the
11th request within one second), and many count requests in a *sliding* window: any one
second may hold at most a second's share of the limit. So a limit here is a ceiling, not a
target: requests leave one interval apart (the generic cell rate algorithm, GCRA), the interval
stretched by `SAFETY_MARGIN` so the jitter between leaving here and arriving there never puts
one request too many into a provider's window. A small tolerance lets a request that the event
loop woke late keep the schedule instead of drifting behind it, and a guard on the requests
sent makes sure that catching up never does either: no span of `PROVIDER_WINDOW_S` stretched by
the margin holds more than the window's whole number of requests.

Nothing here sleeps or reads the time: callers pass `now` (from a Clock) and wait themselves.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

# Providers quantise per-minute limits to about this window (OpenAI documents 1 s).
PROVIDER_WINDOW_S = 1.0
# How far under a limit the pace stays: intervals are this much longer than the limit's, so
# about 20 ms of jitter per second of window is absorbed.
SAFETY_MARGIN = 0.02
# A key's first requests open connections and may reach the provider this much after they
# were booked: the guard counts those booked this soon after a cold start as sent then.
WARMUP_S = 0.25
# A pace unused this long starts cold again (its connections have likely been closed).
COLD_AFTER_S = 15.0


class Pace:
    """An even pace under `per_minute` units; `None` or `inf` means unlimited.

    `ready_at(now, cost)` tells when `cost` units may go; `take(now, cost)` books them. The
    pace runs `SAFETY_MARGIN` under the rate it is given. With `guard` (for requests, whose
    cost is always one) and where a provider's window holds two or more units, no `cap + 1`
    units in a row ever span less than `cap` intervals (`cap`: the units per window, rounded
    up): the tolerance that lets a late request keep the schedule may close one gap, but never
    crowds a window. Units booked within `WARMUP_S` of a cold start count, for the guard, as
    sent `WARMUP_S` after it, since their connections are still being opened, or as sent when
    their answer came (`answered()`), if sooner: it reached the provider by then. No unit ever
    goes before its turn: after an idle spell the pace restarts from now, without a burst.
    """

    __slots__ = (
        "_cap",
        "_guard",
        "_hold",
        "_interval",
        "_per_minute",
        "_sent",
        "_span",
        "_started",
        "_tat",
        "_tolerance",
    )

    def __init__(self, per_minute: float | None, *, guard: bool = True) -> None:
        self._tat = -math.inf  # when the next unit is due (theoretical arrival time)
        self._hold = 0.0  # nothing goes before this (a 429, a spent budget)
        self._per_minute: float | None = None
        self._interval = 0.0
        self._tolerance = 0.0
        self._guard = guard
        self._cap = 0  # the most units any guard span may hold; 0: no guard
        self._span = 0.0  # what `_cap + 1` units in a row span at least
        self._started = -math.inf  # when the pace last started cold
        # The last `_cap` units (guard only): [booked at, counted as sent at].
        self._sent: deque[list[float]] = deque()
        self.set_rate(per_minute)

    @property
    def per_minute(self) -> float | None:
        """The limit being paced under, in units per minute; None when unlimited."""
        return self._per_minute

    @property
    def limited(self) -> bool:
        """False when this pace lets everything through."""
        return self._per_minute is not None

    @property
    def interval(self) -> float:
        """Seconds between two units at this pace (0 when unlimited)."""
        return self._interval

    def set_rate(self, per_minute: float | None) -> None:
        """Change the pace from now on, keeping the schedule already booked."""
        if per_minute is None or math.isinf(per_minute):
            self._per_minute = None
            self._interval = 0.0
            self._tolerance = 0.0
            self._cap = 0
            self._sent.clear()
            return
        self._per_minute = max(per_minute, 1e-6)
        self._interval = 60.0 / self._per_minute * (1.0 + SAFETY_MARGIN)
        per_window = self._per_minute / 60.0 * PROVIDER_WINDOW_S
        # One unit of catch-up only where the provider's window holds two or more units:
        # a key allowed one request per window would refuse the early one.
        self._tolerance = self._interval if per_window >= 2 else 0.0
        self._cap = math.ceil(per_window - 1e-9) if self._guard and per_window >= 2 else 0
        self._span = self._cap * self._interval
        while len(self._sent) > self._cap:
            self._sent.popleft()

    def ready_at(self, now: float, cost: float = 1.0) -> float:
        """Return the earliest time, at or after `now`, that `cost` units may start."""
        if self._per_minute is None:
            return now
        # A cost larger than one window's worth would never fit a provider's window: it is
        # allowed once the schedule is clear.
        at = max(now, self._tat, self._hold)
        if self._cap and len(self._sent) == self._cap:
            # The next unit goes once the cap-th last one has left the guard's span.
            at = max(at, self._sent[0][1] + self._span)
        return at

    def take(self, now: float, cost: float = 1.0) -> None:
        """Book `cost` units as sent at `now` (call only once `ready_at` has come)."""
        if self._per_minute is None:
            return
        # Keep the schedule if we are late by less than the tolerance (the next unit may then
        # follow sooner than one interval); else restart from now, so an idle key does not
        # bank a burst.
        if now - self._tat <= self._tolerance:
            start = self._tat
        else:
            if now - self._tat >= COLD_AFTER_S:
                self._started = now
            start = now
        self._tat = start + cost * self._interval
        if self._cap:
            self._sent.append([now, max(now, self._started + WARMUP_S)])
            while len(self._sent) > self._cap:
                self._sent.popleft()  # only the last `cap` sends decide when the next may go

    def answered(self, booked: float, at: float) -> None:
        """The unit booked at `booked` was answered at `at`: it reached the provider by then."""
        if not self._cap or booked >= self._started + WARMUP_S:
            return  # counted as booked already
        for unit in self._sent:
            if unit[0] == booked:
                unit[1] = min(unit[1], max(booked, at))
                return

    def adjust(self, delta: float) -> None:
        """Correct a booking by `delta` units (positive: more was used than booked)."""
        if self._per_minute is None:
            return
        self._tat += delta * self._interval

    def push_back(self, until: float) -> None:
        """Hold the pace until `until` (after a 429 or a zero remaining budget)."""
        if self._per_minute is None:
            return
        self._tat = max(self._tat, until)
        self._hold = max(self._hold, until)

    def hold_spent(self, now: float, reset: float, cost: float) -> bool:
        """Hold the pace after headers said its budget is spent; False when unpaced.

        Paced just under a known limit, a spent budget comes back a unit at a time (a bucket
        refills, a sliding window's oldest request leaves it), not all at the reset: waiting
        the whole reset would halve a sliding window's rate. An unpaced one has no schedule
        to hold: the caller holds the key until `now + reset` itself.
        """
        if self._per_minute is None:
            return False
        self.push_back(now + min(reset, cost * 60.0 / self._per_minute))
        return True


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a response's `x-ratelimit-*` headers said (None where absent)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None


class Discovery:
    """Find a rate limit nobody declared: grow until 429s appear, then settle just under.

    Slow start doubles the rate each step the key was kept busy, a step lasting four
    intervals but at least 50 ms (as TCP's slow start doubles its window each round trip), so
    an endpoint with no limit is paced by its concurrency alone within a second or so. The
    first 429 marks a ceiling (the rate the key was seen to send over the last provider
    window), and the rate drops to 80% of it. Then each busy second without a 429 closes half
    the gap to 95% of the ceiling, so the last rate that worked is back within seconds, with or
    without a Retry-After; from there the rate creeps up by 1% of the ceiling for each ten busy
    seconds without a 429, so it lives just under the limit. Past the ceiling without a 429,
    each step doubles (as TCP CUBIC probes past its last loss): a limit that rose, or a cap
    that was never a rate (a relay refusing too many requests in flight with a rate-limit
    message), is caught up with in minutes rather than hours. A key that did not
    use most of its rate in a step does not grow: an idle key proves nothing.
    """

    __slots__ = (
        "_beyond",
        "_ceiling",
        "_crept_at",
        "_found",
        "_last_429",
        "_last_cut",
        "_last_step",
        "_sent_in_step",
        "rate",
    )

    START_RPM = 600.0
    SLOW_START_STEP_S = 0.05  # slow start doubles the rate this often at most,
    SLOW_START_SENDS = 4  # and only once a step has had room for this many requests
    STEP_S = 1.0  # after the first 429, the rate closes in on its target this often
    CREEP_S = 10.0  # and, once there, creeps up this often
    BACK_TO = 0.95  # the share of the ceiling the rate quickly comes back to after a cut

    def __init__(self, start_rpm: float = START_RPM) -> None:
        self.rate = start_rpm
        self._ceiling: float | None = None
        self._last_step = 0.0
        self._sent_in_step = 0
        self._last_429 = -math.inf
        self._last_cut = -math.inf
        self._crept_at = -math.inf
        self._found = 0.0  # the ceiling as the last 429 left it
        self._beyond = 0  # steps taken past it since

    @property
    def ceiling(self) -> float | None:
        """The rate (per minute) at which the first 429s came, once found."""
        return self._ceiling

    def on_sent(self, now: float, saturated: bool) -> float | None:
        """Note one request sent; return a new rate (per minute) when it should change."""
        if self._last_step == 0.0:
            self._last_step = now
        if saturated:
            self._sent_in_step += 1
        elapsed = now - self._last_step
        if self._ceiling is None:
            if elapsed < max(self.SLOW_START_STEP_S, self.SLOW_START_SENDS * 60.0 / self.rate):
                return None
            used = self._sent_in_step / elapsed * 60.0
            self._last_step, self._sent_in_step = now, 0
            # Half will do: the step's first request was still booked at the old rate.
            if used >= 0.5 * self.rate:
                self.rate *= 2.0
                return self.rate
            return None
        if elapsed < self.STEP_S or now - self._last_429 < self.STEP_S:
            return None
        used = self._sent_in_step / elapsed * 60.0
        self._last_step, self._sent_in_step = now, 0
        if used < 0.8 * self.rate:
            return None
        target = self.BACK_TO * self._found
        if self.rate < target:
            # Back to the last rate that worked, in seconds: half the gap each busy second.
            self.rate = min(target, self.rate + max(0.5 * (target - self.rate), 0.01 * self._found))
            self._crept_at = now
            return self.rate
        if now - max(self._last_429, self._crept_at) < self.CREEP_S:
            return None
        self._crept_at = now
        step = 0.01 * self._found
        if self.rate >= self._found:
            step = min(step * 2.0**self._beyond, 0.25 * self.rate)
            self._beyond += 1
        self.rate += step
        self._ceiling = max(self._ceiling, self.rate)
        return self.rate

    def on_rate_limited(self, now: float, observed_rpm: float) -> float:
        """Note a 429; return the rate (per minute) to use from now on."""
        self._last_429 = now
        if now - self._last_cut < 1.0 and self._ceiling is not None:
            return self.rate  # one burst of 429s counts once
        self._last_cut = self._last_step = now
        self._sent_in_step = 0
        ceiling = min(self.rate, observed_rpm) if observed_rpm > 0 else self.rate
        self._ceiling = ceiling if self._ceiling is None else min(self._ceiling, ceiling)
        self._found, self._beyond = self._ceiling, 0
        self.rate = 0.8 * self._ceiling
        return self.rate


class ConcurrencyWindow:
    """Find a concurrency cap nobody declared: shrink on refusals that only it explains.

    Relays and some providers cap the requests a key may have in flight and answer the excess
    with 429, often worded like a rate limit. Honouring each such 429's Retry-After for the
    whole key would stall it again and again (64 sent, 4 accepted, 60 refused, a second's
    rest, over and over), so the pool hands those refusals here instead. A refusal of a
    request that left with `n` requests in flight (itself included) sets the window to
    `n - 1`, unless requests left at that level or higher have succeeded since the last cut
    (then something else refused it: the caller cools the key as usual). Refusals of requests
    sent above the window belong to the round already cut and change nothing. The window grows
    by one for each ten seconds it was kept full without a cut, so it lives at the cap and
    follows it if it rises; it never exceeds `ceiling` (the configured concurrency).
    """

    __slots__ = ("_changed_at", "_full", "_good", "ceiling", "size")

    GROW_AFTER_S = 10.0

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.size = ceiling
        self._good = 0  # the highest in-flight level a success left at since the last cut
        self._changed_at = -math.inf
        self._full = False

    def on_sent(self, now: float, in_flight: int) -> None:
        """Note a request sent with `in_flight` now in flight; grow the window when due."""
        if in_flight >= self.size:
            self._full = True
        if self.size < self.ceiling and self._full and now - self._changed_at >= self.GROW_AFTER_S:
            self.size += 1
            self._changed_at = now
            self._full = False

    def on_ok(self, in_flight_at_start: int) -> None:
        """Note a success of a request that left with `in_flight_at_start` in flight."""
        # A success above the window left before the last cut: requests racing each other to
        # the server may be accepted out of order, so it does not prove the key holds more.
        level = min(in_flight_at_start, self.size)
        if level > self._good:
            self._good = level

    def on_refused(self, now: float, in_flight_at_start: int, *, worded: bool) -> bool:
        """Note a 429; return True when the window explains it (the key need not cool).

        `worded`: the provider said it was about concurrency, so successes at that level
        (another client of the same account, a cap that just dropped) do not overrule it.
        """
        n = in_flight_at_start
        if n > self.size:
            return True  # sent under a wider window, already cut
        if n <= 1 or (n <= self._good and not worded):
            return False
        self.size = n - 1
        self._good = min(self._good, self.size)
        self._changed_at = now
        self._full = False
        return True


def parse_duration(text: str) -> float | None:
    """Return seconds from an OpenAI-style duration ("20ms", "1.5s", "6m0s", "1h2m") or None.

    A value that is not a duration (a typo in a header, a negative or infinite number) gives
    None rather than an exception: a bad header must never stop a run.
    """
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total = 0.0
    pos = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|h|m|s)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
