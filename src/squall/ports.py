"""The engine's ports: what it needs of a pool of keys, a journal and a transport.

A port is a protocol whose every call may cross a process boundary (a Ray actor, another
machine): every method is awaitable and takes and returns small frozen values, never a
secret or a config object. The engine (`engine.py`) is written against these alone;
`runner.py` wires in the local implementations (`pool.EndpointPool`, `journal_port.LocalJournal`,
`transport.Transport`), and `squall.testing` ships doubles (`FakeTransport`, `MemoryJournal`)
that prove the ports can be swapped.

    engine ──acquire/release──▶ PoolPort       (which key, when; what an answer taught it)
           ──mark/record─────▶ JournalPort    (durable before it counts: each await returns
                                               once the change is committed)
           ──send────────────▶ TransportPort  (resolves the lease's key id to credentials)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .errors import AuthError, ConnectionLost, RateLimited, RequestError
from .limits import RateInfo
from .records import Completion, ErrorInfo


class Lease(NamedTuple):
    """A booked place on one key, handed back through `PoolPort.release_*`.

    A NamedTuple, not a frozen dataclass: one is made per request, and a tuple is built
    about five times faster (0.5 us against 2.9 us here), which `bench/overhead` sees.

    Attributes:
        key: the key's id in the pool (its label, e.g. "relay#2"); the transport resolves it
            to the key's URL and credentials, so a lease never carries a secret.
        endpoint: the endpoint's name.
        model: the model the key's endpoint sends (see `pinned`).
        tokens: tokens booked against the key's tokens-per-minute pace.
        started: when it was booked, on the pool's clock.
        probe: the first request to an endpoint after it rested: the only one until it answers.
        in_flight: requests in flight on the key when this one left, itself included.
        pinned: the endpoint names its own model, which wins over a row's.
    """

    key: str
    endpoint: str
    model: str
    tokens: float
    started: float
    probe: bool = False
    in_flight: int = 1
    pinned: bool = False


class Usage(NamedTuple):
    """Tokens an answer used, as the provider counted them (None: it did not say)."""

    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a failed attempt tells the pool about its key or endpoint.

    Attributes:
        kind: the error's stable kind ("rate_limited", "auth", "connection", ...).
        status: the HTTP status, or None when no answer came (the endpoint was not reached).
        retry_after: seconds a 429 asked to wait, when it said.
        concurrency: a 429 worded as "too many requests in flight".
        refused: the connection was refused (the endpoint is down).
        rate: the answer's rate-limit headers, if any.
    """

    kind: str
    status: int | None = None
    retry_after: float | None = None
    concurrency: bool = False
    refused: bool = False
    rate: RateInfo | None = None

    @classmethod
    def of(cls, error: RequestError) -> Refusal:
        """Return what `error` teaches the pool."""
        if isinstance(error, RateLimited):
            return cls(
                error.kind,
                error.status,
                retry_after=error.retry_after,
                concurrency=error.concurrency,
                rate=error.rate,
            )
        if isinstance(error, ConnectionLost):
            return cls(error.kind, error.status, refused=error.refused, rate=error.rate)
        return cls(error.kind, error.status, rate=error.rate)

    @property
    def rate_limited(self) -> bool:
        """True for a 429."""
        return self.kind == RateLimited.kind

    @property
    def dead_key(self) -> bool:
        """True when the key was refused (401/403, out of credit): it leaves the pool."""
        return self.kind == AuthError.kind


class PoolPort(Protocol):
    """Which key each request goes to, and when; any number of callers may wait at once."""

    async def acquire(self, prompt_tokens: int, max_tokens: int | None) -> Lease:
        """Wait until some key can start a request this size; book it and return the lease.

        Raises:
            RunStopped: no key can ever take it (all dead, or no endpoint reachable).
        """
        ...

    async def release_ok(self, lease: Lease, usage: Usage, rate: RateInfo | None) -> None:
        """Hand back a lease after an answer, with the tokens used and the rate headers."""
        ...

    async def release_error(self, lease: Lease, refusal: Refusal) -> None:
        """Hand back a lease after a failed request; its key or endpoint learns from it."""
        ...


class JournalPort(Protocol):
    """Where every row's progress is made durable; each await returns once it is on disk."""

    async def mark_sent(self, index: int) -> None:
        """Record that row `index` is about to be sent (before the request leaves)."""
        ...

    async def record_success(
        self,
        index: int,
        completion: Completion,
        *,
        latency_s: float,
        attempts: int,
        endpoint: str,
        model: str | None = None,
    ) -> None:
        """Record row `index`'s answer."""
        ...

    async def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Record a failed try of row `index` that will be tried again."""
        ...

    async def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None:
        """Record that row `index` failed for good in this run."""
        ...

    async def flush(self) -> None:
        """Make every change recorded so far durable (at the end of a run)."""
        ...


class TransportPort(Protocol):
    """Sends one request body on a leased key: read as the run's operation, or left unread."""

    async def send(self, lease: Lease, body: bytes) -> tuple[Completion, RateInfo | None]:
        """Post `body` with the credentials of `lease.key`; return the answer and its headers.

        Raises:
            RequestError: a subclass saying what went wrong (see squall.errors).
        """
        ...

    async def send_raw(self, lease: Lease, body: bytes) -> tuple[bytes, RateInfo | None]:
        """Post `body` as `send` does; return a 200 answer's body unread, and its headers.

        The engine sends a pack of rows (embeddings) this way and shares out the answer.

        Raises:
            RequestError: a subclass saying what went wrong (a 200 is never one).
        """
        ...
