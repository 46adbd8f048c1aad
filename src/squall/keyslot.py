"""One key of one endpoint: its pace, its concurrency window, and what its answers taught it.

A `KeySlot` holds no secret (the transport resolves its id to credentials) and is changed only
through its verbs: `book()` when a request leaves, `on_success()`, `on_rate_limited()`,
`on_headers()`, `on_dead()` and `on_error()` when it comes back. The pool (`pool.py`) chooses
among slots and never touches their fields.
"""

from __future__ import annotations

import math
from collections import deque

from .config import EndpointConfig, KeyConfig, is_unlimited
from .events import KeyState, KeyStats
from .limits import PROVIDER_WINDOW_S, ConcurrencyWindow, Discovery, Pace, RateInfo
from .ports import Lease, Refusal, Usage

_COOL_MAX_S = 60.0
# A declared (or announced) limit that still draws 429s is paced this much lower per cut, never
# below _FACTOR_MIN of it, and recovers _FACTOR_STEP of it per _FACTOR_RECOVER_S without a cut.
_FACTOR_CUT = 0.97
_FACTOR_MIN = 0.3
_FACTOR_STEP = 0.01
_FACTOR_RECOVER_S = 5.0
_RECENT_S = 5.0  # the longest span rate_now() is asked about
# A cut's episode lasts one round trip of the 429 that made it, at most this long: see _cool.
_EPISODE_MAX_S = 10.0


EARLY_S = 0.002
"""See `KeySlot.early_s`: well inside the pace's safety margin (`limits.SAFETY_MARGIN`)."""


class KeySlot:
    """One key of one endpoint, with its pace, concurrency and health."""

    def __init__(self, key_id: str, endpoint: EndpointConfig, key: KeyConfig, model: str) -> None:
        self.key_id = key_id
        self.endpoint = endpoint.name
        self.base_url = endpoint.base_url
        self.masked = key.key.masked
        self.model = model
        self.pinned = endpoint.model is not None
        rpm = key.rpm if key.rpm is not None else endpoint.rpm
        tpm = key.tpm if key.tpm is not None else endpoint.tpm
        self.declared_rpm = None if rpm is None or is_unlimited(rpm) else rpm
        self.declared_tpm = None if tpm is None or is_unlimited(tpm) else tpm
        self.discovery: Discovery | None = Discovery() if rpm is None else None
        self.header_rpm: float | None = None
        self.header_tpm: float | None = None
        self.factor = 1.0  # shrinks when a declared limit still draws 429s
        self._factor_at = -math.inf  # when the factor last changed
        self._episode_until = -math.inf  # requests sent until then share that cut's 429s
        self._last_cost = 0.0  # the tokens the last request booked
        self.requests = Pace(None)
        self.tokens = Pace(None, guard=False)
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

    @property
    def label(self) -> str:
        """The key's name in displays and notices (its id)."""
        return self.key_id

    @property
    def discovering(self) -> bool:
        """True while this key's rate is being found out (none declared, none in headers)."""
        return self.discovery is not None and self.header_rpm is None

    @property
    def early_s(self) -> float:
        """How much before its turn a request may be booked on this key.

        `EARLY_S` while no limit is known at all (none declared, none in headers, no 429
        yet): discovery's pace only probes growth then, and booking the requests due within
        the next moment together lets them leave in one event-loop turn (one journal
        commit) instead of one turn each, which cost an undeclared unlimited endpoint a
        third of its rate. The schedule is kept (`Pace.take` books from its due time), so
        the rate is the same. 0 otherwise: a known limit is paced exactly.
        """
        if (
            self.discovering
            and self.discovery is not None
            and self.discovery.ceiling is None
            and self.declared_tpm is None
            and self.header_tpm is None
        ):
            return EARLY_S
        return 0.0

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

    # -- choosing and booking ------------------------------------------------------------------

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

    def room(self) -> float:
        """The share of its window in use (ties go to the key with more room)."""
        return self.in_flight / self.window.size

    def book(self, now: float, cost: float, *, probe: bool) -> Lease:
        """Take one request of `cost` tokens at `now` and return its lease."""
        self.requests.take(now)
        self.tokens.take(now, cost)
        self._last_cost = cost
        self.in_flight += 1
        self.sent += 1
        self.note_sent(now)
        self.window.on_sent(now, self.in_flight)
        if self.discovering:
            assert self.discovery is not None
            new = self.discovery.on_sent(now, saturated=self.requests.ready_at(now) > now)
            if new is not None:
                self._apply_rates()
        return Lease(
            self.key_id, self.endpoint, self.model, cost, now, probe, self.in_flight, self.pinned
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

    # -- what answers teach ----------------------------------------------------------------------

    def on_success(self, lease: Lease, usage: Usage, now: float | None = None) -> None:
        """Learn from an answer (at `now`, if known).

        It says the window held, how many tokens answers really use, and that the request
        reached the provider by then.
        """
        self.in_flight -= 1
        self.ok += 1
        if now is not None:
            self.requests.answered(lease.started, now)
        self.window.on_ok(lease.in_flight)
        self.cool_streak = 0
        if usage.completion_tokens is not None:
            self.completion_mean += 0.05 * (usage.completion_tokens - self.completion_mean)
        if usage.prompt_tokens is not None and usage.completion_tokens is not None:
            self.tokens.adjust(usage.prompt_tokens + usage.completion_tokens - lease.tokens)
        if self.factor < 1.0 and lease.started - self._factor_at >= _FACTOR_RECOVER_S:
            # Slowly back up: a limit that drew a 429 once is tried again, a step at a time.
            self.factor = min(1.0, self.factor + _FACTOR_STEP)
            self._factor_at = lease.started
            self._apply_rates()

    def on_error(self) -> None:
        """Count a failed request that teaches the key nothing more specific."""
        self.in_flight -= 1
        self.errors += 1

    def on_dead(self) -> bool:
        """Take the key out of rotation (401/403); True the first time."""
        if self.dead:
            return False
        self.dead = True
        return True

    def on_rate_limited(self, lease: Lease, refusal: Refusal, now: float) -> str | None:
        """Learn from a 429: narrow the window when it was too many at once, else cool down.

        Returns:
            A notice for a person when the window narrowed below any announced before.
        """
        self.in_flight -= 1
        self.rate_limited += 1
        if self._too_many_at_once(lease, refusal, now):
            # Only a cut reaches below every window announced so far: growing back and
            # probing the old width again is not news.
            if self.window.size < self.window_told:
                self.window_told = self.window.size
                return (
                    f"key {self.label} ({self.masked}) refuses more than {self.window.size} "
                    f"request(s) at once: sending at most that many (it tries one more every "
                    f"{ConcurrencyWindow.GROW_AFTER_S:.0f}s)"
                )
            return None
        self._cool(lease, refusal, now)
        return None

    def _too_many_at_once(self, lease: Lease, refusal: Refusal, now: float) -> bool:
        """True when the 429 came from too many requests in flight.

        Then the window narrows instead of the key cooling. Only where the answer says so, or
        where no pace is in force on the key (so its rate cannot be what was refused).
        """
        unpaced = self.requests.per_minute is None and self.tokens.per_minute is None
        if not (refusal.concurrency or unpaced):
            return False
        return self.window.on_refused(now, lease.in_flight, worded=refusal.concurrency)

    def _cool(self, lease: Lease, refusal: Refusal, now: float) -> None:
        if lease.started <= self._episode_until:
            # Sent before the last cut, or within one round trip after it: one of the burst
            # that cut already answered. A gateway such as LiteLLM hands such 429s back over a
            # second or more, without a Retry-After, and while it still drains the queue built
            # before the cut it refuses what arrives right after it too (as TCP cuts its window
            # once per round trip, not once per loss). Counting each would double the cooldown
            # and cut the rate again, each time to the lower rate seen while cooling. Only a
            # wait the provider asked for is still honoured.
            if refusal.retry_after is not None:
                until = now + refusal.retry_after
                self.blocked_until = max(self.blocked_until, until)
                self.requests.push_back(until)
            return
        self.cool_streak += 1
        wait = refusal.retry_after
        if wait is None:
            wait = min(_COOL_MAX_S, 0.5 * 2 ** (self.cool_streak - 1))
        until = now + wait
        # The rate this key really sent at: over the last provider window (a longer span would
        # average in slow start's lower rates), only since its last cooldown ended, since time
        # spent blocked would make the limit look lower than it is.
        since = max(now - PROVIDER_WINDOW_S, self.blocked_until)
        observed = self.rate_now(now, span=now - since) * 60.0 if now - since >= 0.5 else 0.0
        self.blocked_until = max(self.blocked_until, until)
        self.requests.push_back(until)
        if self.discovering:
            assert self.discovery is not None
            self.discovery.on_rate_limited(now, observed)
            self._apply_rates()
        elif (
            self.declared_rpm is not None
            or self.header_rpm is not None
            or self.declared_tpm is not None
            or self.header_tpm is not None
        ):
            # A known limit still refused: pace it a little lower.
            self.factor = max(_FACTOR_MIN, self.factor * _FACTOR_CUT)
            self._factor_at = now
            self._apply_rates()
        # The 429's own round trip: seconds behind a loaded gateway, a few ms from a provider.
        self._episode_until = now + min(_EPISODE_MAX_S, max(0.0, now - lease.started))

    def on_headers(self, rate: RateInfo, now: float) -> None:
        """Follow the `x-ratelimit-*` headers: a limit they state, a budget they say is spent."""
        changed = False
        if rate.limit_requests and rate.limit_requests != self.header_rpm:
            self.header_rpm = rate.limit_requests
            changed = True
        if rate.limit_tokens and rate.limit_tokens != self.header_tpm:
            self.header_tpm = rate.limit_tokens
            changed = True
        if changed:
            self._apply_rates()
        for remaining, reset, pace, cost in (
            (rate.remaining_requests, rate.reset_requests_s, self.requests, 1.0),
            (rate.remaining_tokens, rate.reset_tokens_s, self.tokens, self._last_cost),
        ):
            if remaining is None or remaining > 0 or not reset:
                continue
            if not pace.hold_spent(now, reset, cost):
                self.blocked_until = max(self.blocked_until, now + reset)

    # -- reading ---------------------------------------------------------------------------------

    def state(self, now: float, resting: bool) -> KeyState:
        """Where the key stands at `now` (`resting`: its endpoint refuses connections)."""
        if self.dead:
            return KeyState.DEAD
        if resting:
            return KeyState.RESTING
        if self.blocked_until > now:
            return KeyState.COOLING
        return KeyState.ACTIVE

    def statistics(self, now: float, resting: bool) -> KeyStats:
        """Return a snapshot of this key."""
        return KeyStats(
            label=self.label,
            endpoint=self.endpoint,
            masked_key=self.masked,
            state=self.state(now, resting),
            in_flight=self.in_flight,
            sent=self.sent,
            ok=self.ok,
            rate_limited=self.rate_limited,
            errors=self.errors,
            rpm=self.requests.per_minute,
            tpm=self.tokens.per_minute,
            discovering=self.discovering,
            rate_now=self.rate_now(now),
            window=self.window.size,
        )
