"""Every key's budget for a whole cluster: slots handed out in small, evenly spaced slices.

`ClusterBudget` lives in one place (the coordinator actor, `squall.ray.actors`) and is the
only judge of when each key may send. A worker asks it for a slice of slots (`lease`), each
a key and the wall-clock time its request may leave; the slots of one key are one pace
apart across the cluster, whoever holds them, so a provider's one-second window sees the
key's limit spread evenly rather than one burst per worker. The slots of a slice reach at
most `horizon_s` ahead: a worker asks again before it runs out, so the coordinator is
asked once per slice, not per request, and a 429 reported by any worker (`report`) moves
the key's schedule for all of them within a horizon.

Requests per minute and tokens per minute are paced by `squall.limits.Pace` (the same
arithmetic as a local run, with its safety margin); concurrency counts slots handed out and
not yet reported back. A key with no declared rpm is found by `squall.limits.Discovery`, as
locally, until a worker reports the limit its answers' `x-ratelimit-*` headers state; a
stated limit lower than the declared one wins, and a budget the headers say is spent holds
the key's schedule back for every worker, as a local key's headers do. Nothing here
imports Ray or reads a clock: callers pass `now` (wall time, which every process on a
host, and NTP-synced hosts, agree on).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..limits import Discovery, Pace

HORIZON_S = 0.5
"""How far ahead a slice's slots may reach: a 429 can catch the others' slots this late."""
DEFAULT_COOL_S = 1.0
"""How long a key waits after a 429 that gave no Retry-After."""


@dataclass(frozen=True, slots=True)
class KeyBudget:
    """One key's limits, as the config declares them (None: not declared).

    Attributes:
        key: the key's id (`pool.iter_keys`); endpoint: its endpoint's name.
        model: the model its endpoint sends; pinned: the endpoint names it itself.
        rpm, tpm: requests and tokens per minute (inf: unlimited; None: rpm discovered,
            tpm unlimited).
        concurrency: the most requests in flight on it, cluster-wide.
        masked: the key as squall shows it (`sk-...abcd`), for the account.
    """

    key: str
    endpoint: str
    model: str
    rpm: float | None
    tpm: float | None
    concurrency: int
    pinned: bool = False
    masked: str = ""


class Slot(NamedTuple):
    """A place on one key: its request may leave at `at` (wall time)."""

    key: str
    at: float
    tokens: float


PerKind = tuple[float | None, float | None]
"""A figure for requests and one for tokens (None where the headers said nothing)."""


class Report(NamedTuple):
    """What became of a slot's request, sent back to the budget.

    Attributes:
        key: the slot's key.
        outcome: "ok", "error", "rate_limited", "dead" (the key was refused) or "unused"
            (the slot was given back without a request).
        retry_after: seconds a 429 asked to wait, if it said.
        token_delta: tokens used beyond (positive) or under those booked.
        limits: the (requests, tokens) per minute the answer's headers stated, where they
            stated one the worker had not reported yet (None otherwise).
        spent: seconds until the (requests, tokens) budget resets, where the headers said
            it is spent (remaining 0); None otherwise.
    """

    key: str
    outcome: str
    retry_after: float | None = None
    token_delta: float = 0.0
    limits: PerKind | None = None
    spent: PerKind | None = None


class KeyCounters(NamedTuple):
    """One key's cluster-wide counters, as the driver shows them."""

    key: str
    state: str  # "active" or "dead"
    in_flight: int
    ok: int
    rate_limited: int
    errors: int
    rpm: float | None  # the pace in force (None: unpaced)
    discovering: bool  # no rpm declared nor stated in headers: being found


@dataclass
class _Key:
    spec: KeyBudget
    requests: Pace
    tokens: Pace
    discovery: Discovery | None
    in_flight: int = 0
    dead: bool = False
    header_rpm: float | None = None  # the rpm the answers' headers stated (ends discovery)
    last_tokens: float = 0.0  # the tokens the key's last slot booked
    blocked_until: float = 0.0  # no slot before this (a 429, a spent budget), paced or not
    sent: deque[float] = field(default_factory=deque)  # slot times of the last second
    ok: int = 0
    rate_limited: int = 0
    errors: int = 0


class ClusterBudget:
    """The budgets of every key, handing out slots (see the module docstring)."""

    def __init__(self, keys: list[KeyBudget], *, horizon_s: float = HORIZON_S) -> None:
        self._keys: dict[str, _Key] = {}
        for k in keys:
            discover = k.rpm is None
            self._keys[k.key] = _Key(
                k,
                Pace(None if discover else k.rpm),
                Pace(k.tpm, guard=False),
                Discovery() if discover else None,
            )
            if discover:
                self._keys[k.key].requests.set_rate(Discovery.START_RPM)
        self._horizon = horizon_s
        # Each worker's slots not reported back yet, by key: a lost worker's are forgotten.
        self._held: dict[int, Counter[str]] = {}

    @property
    def alive(self) -> int:
        """How many keys are not dead."""
        return sum(not k.dead for k in self._keys.values())

    def spec(self, key: str) -> KeyBudget:
        """Return a key's limits and model."""
        return self._keys[key].spec

    def lease(self, now: float, n: int, tokens: float, worker: int = 0) -> list[Slot]:
        """Return up to `n` slots of `tokens` each, soonest first, none past the horizon.

        Fewer (maybe none) when every key is at its concurrency or its schedule is full up
        to the horizon; the caller asks again a little later.
        """
        out: list[Slot] = []
        until = now + self._horizon
        while len(out) < n:
            best: tuple[float, _Key] | None = None
            for k in self._keys.values():
                if k.dead or k.in_flight >= k.spec.concurrency:
                    continue
                at = max(
                    now, k.blocked_until, k.requests.ready_at(now), k.tokens.ready_at(now, tokens)
                )
                if best is None or at < best[0]:
                    best = (at, k)
            if best is None or best[0] > until:
                break
            at, k = best
            k.requests.take(at)
            k.tokens.take(at, tokens)
            k.last_tokens = tokens
            k.in_flight += 1
            self._held.setdefault(worker, Counter())[k.spec.key] += 1
            k.sent.append(at)
            while k.sent[0] < at - 1.0:
                k.sent.popleft()
            if k.discovery is not None and k.header_rpm is None:
                # A worker asks only for what it has rows for: the key is kept busy.
                rpm = k.discovery.on_sent(at, True)
                if rpm is not None:
                    k.requests.set_rate(rpm)
            out.append(Slot(k.spec.key, at, tokens))
        return out

    def report(self, now: float, reports: list[Report], worker: int = 0) -> None:
        """Take back slots with what became of their requests."""
        held = self._held.setdefault(worker, Counter())
        for r in reports:
            k = self._keys.get(r.key)
            if k is None:
                continue
            k.in_flight = max(0, k.in_flight - 1)
            held[r.key] = max(0, held[r.key] - 1)
            if r.token_delta:
                k.tokens.adjust(r.token_delta)
            if r.limits is not None:
                self._stated(k, *r.limits)
            if r.spent is not None:
                self._spent(k, now, *r.spent)
            if r.outcome == "ok":
                k.ok += 1
            elif r.outcome == "rate_limited":
                k.rate_limited += 1
                self._cool(k, now, r.retry_after)
            elif r.outcome == "dead":
                k.dead = True
                k.errors += 1
            elif r.outcome == "error":
                k.errors += 1

    def forget(self, worker: int) -> int:
        """Take back every slot a lost worker held (it will never report them); return them."""
        held = self._held.pop(worker, Counter())
        for key, n in held.items():
            k = self._keys[key]
            k.in_flight = max(0, k.in_flight - n)
        return sum(held.values())

    def _stated(self, k: _Key, rpm: float | None, tpm: float | None) -> None:
        """Follow the limits a key's headers stated: the lower of stated and declared."""
        if rpm:
            k.header_rpm = rpm
            declared = k.spec.rpm
            k.requests.set_rate(rpm if declared is None else min(declared, rpm))
        if tpm:
            declared = k.spec.tpm
            k.tokens.set_rate(tpm if declared is None else min(declared, tpm))

    def _spent(self, k: _Key, now: float, requests_s: float | None, tokens_s: float | None) -> None:
        """Hold a key whose headers said a budget is spent, for every worker (`Pace.hold_spent`)."""
        for reset, pace, cost in (
            (requests_s, k.requests, 1.0),
            (tokens_s, k.tokens, k.last_tokens),
        ):
            if reset and not pace.hold_spent(now, reset, cost):
                k.blocked_until = max(k.blocked_until, now + reset)

    def _cool(self, k: _Key, now: float, retry_after: float | None) -> None:
        wait = retry_after if retry_after is not None and retry_after > 0 else DEFAULT_COOL_S
        if k.discovery is not None and k.header_rpm is None:
            while k.sent and k.sent[0] < now - 1.0:
                k.sent.popleft()
            rpm = k.discovery.on_rate_limited(now, len(k.sent) * 60.0)
            k.requests.set_rate(rpm)
        k.requests.push_back(now + wait)
        # An unpaced key (rpm = inf) has no schedule to push back: it waits all the same.
        k.blocked_until = max(k.blocked_until, now + wait)

    def stats(self) -> list[KeyCounters]:
        """Return each key's cluster-wide counters."""
        return [
            KeyCounters(
                name,
                "dead" if k.dead else "active",
                k.in_flight,
                k.ok,
                k.rate_limited,
                k.errors,
                k.requests.per_minute if not math.isinf(k.requests.per_minute or 0) else None,
                k.discovery is not None and k.header_rpm is None,
            )
            for name, k in self._keys.items()
        ]
