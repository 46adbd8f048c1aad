"""Live counters of a run and of each key, and its notices, read through frozen snapshots.

The engine bumps plain integer fields on the hot path (cheap); the progress display calls
`statistics()` a few times a second and never reads private state.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run's counters at one moment (this session only; the journal has the totals)."""

    total: int
    done_before: int
    done: int
    failed: int
    retries: int
    in_flight: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    errors: dict[str, int]
    elapsed_s: float
    stopping: str | None


@dataclass(slots=True)
class RunStats:
    """Counters the engine updates as answers arrive."""

    total: int = 0
    done_before: int = 0
    failed_before: int = 0
    done: int = 0
    failed: int = 0
    retries: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    stopping: str | None = None
    notices: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    _unread: int = 0

    def notice(self, message: str) -> None:
        """Record a message a person should see (a key removed, an endpoint resting...)."""
        self.notices.append(message)
        self._unread += 1

    def take_notices(self) -> list[str]:
        """Return the notices not yet taken, oldest first."""
        n = min(self._unread, len(self.notices))
        self._unread = 0
        return list(self.notices)[-n:] if n else []

    def statistics(self, now: float) -> Snapshot:
        """Return a frozen snapshot of the counters."""
        return Snapshot(
            total=self.total,
            done_before=self.done_before,
            done=self.done,
            failed=self.failed,
            retries=self.retries,
            in_flight=self.in_flight,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost=self.cost,
            errors=dict(self.errors),
            elapsed_s=max(0.0, now - self.started),
            stopping=self.stopping,
        )
