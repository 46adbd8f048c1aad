"""RetryPolicy: which errors are tried again, when, and against which budget."""

from __future__ import annotations

import random

import pytest

from squall.config import RetryConfig
from squall.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    ContentFiltered,
    MalformedResponse,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
)
from squall.retry import Attempts, RetryPolicy


def policy(seed: int = 7, **cfg: float) -> RetryPolicy:
    return RetryPolicy(RetryConfig(**cfg), random.Random(seed))  # type: ignore[arg-type]


FAULTS: list[RequestError] = [
    ServerError("HTTP 500", status=500),
    ServerError("HTTP 503", status=503),
    RequestTimeout("no answer"),
    ConnectionLost("reset"),
    MalformedResponse("not json", status=200),
]


@pytest.mark.parametrize("error", FAULTS, ids=lambda e: type(e).__name__)
def test_faults_are_retried_until_the_fault_budget_is_spent(error: RequestError) -> None:
    p = policy(max_attempts=4)
    attempts = Attempts()
    decisions = [p.decide(error, attempts) for _ in range(4)]
    assert [d.retry for d in decisions] == [True, True, True, False]
    assert attempts.faults == 4
    assert attempts.rate_limited == 0


def test_429s_have_a_budget_of_their_own_and_no_delay_of_the_rows_own() -> None:
    p = policy(max_attempts=3, max_rate_limited=50)
    attempts = Attempts()
    for _ in range(49):
        d = p.decide(RateLimited("HTTP 429", retry_after=2.0), attempts)
        assert d.retry
        assert d.delay == 0.0  # the key is cooled; another key may take the row at once
    assert attempts.faults == 0
    # The fault budget is untouched by all those 429s: a 5xx still gets its full tries.
    assert p.decide(ServerError("HTTP 500", status=500), attempts).retry
    assert p.decide(ServerError("HTTP 500", status=500), attempts).retry
    assert not p.decide(ServerError("HTTP 500", status=500), attempts).retry
    # The 50th 429 spends the 429 budget: the row is recorded (a rerun sends it again).
    assert not p.decide(RateLimited("HTTP 429"), Attempts(rate_limited=49)).retry


def test_a_refused_connection_waits_like_a_429_without_spending_the_fault_budget() -> None:
    p = policy(max_attempts=2, max_rate_limited=5)
    attempts = Attempts()
    refused = ConnectionLost("cannot connect", refused=True)
    decisions = [p.decide(refused, attempts) for _ in range(5)]
    assert [d.retry for d in decisions] == [True, True, True, True, False]
    assert all(d.delay == 0.0 for d in decisions)  # the pool rests the endpoint instead
    assert attempts.faults == 0
    # A reset mid-answer is a fault: the server got the request.
    assert p.decide(ConnectionLost("reset"), Attempts()).delay > 0


def test_the_default_budget_carries_a_row_through_several_faults() -> None:
    p = RetryPolicy(RetryConfig())
    attempts = Attempts()
    assert all(p.decide(ServerError("HTTP 502", status=502), attempts).retry for _ in range(5))


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("HTTP 400", status=400),
        BadRequest("HTTP 404", status=404),
        BadRequest("HTTP 422", status=422),
        ContentFiltered("filtered", status=400),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.status}",
)
def test_fatal_errors_are_recorded_at_once(error: RequestError) -> None:
    attempts = Attempts()
    d = policy().decide(error, attempts)
    assert not d.retry
    assert attempts.faults == 0


def test_a_dead_key_sends_the_row_elsewhere_without_spending_its_budgets() -> None:
    p = policy(max_attempts=1)
    attempts = Attempts()
    for status in (401, 403, 401):
        d = p.decide(AuthError(f"HTTP {status}", status=status), attempts)
        assert d.retry
        assert d.delay == 0.0
    assert attempts.faults == 0 and attempts.rate_limited == 0


def test_backoff_grows_exponentially_with_jitter_within_bounds() -> None:
    p = policy(seed=1, backoff_base_s=0.5, backoff_max_s=8.0)
    for faults, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (20, 8.0)]:
        delays = [p.backoff(faults) for _ in range(200)]
        # Equal jitter: never less than half the ceiling (so retries back off), never above it.
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered: rows that failed together spread out
        assert max(delays) - min(delays) > 0.4 * ceiling / 2


def test_decide_returns_the_growing_backoff_for_faults() -> None:
    p = policy(seed=3, backoff_base_s=1.0, backoff_max_s=100.0, max_attempts=10)
    attempts = Attempts()
    delays = [p.decide(ServerError("x", status=500), attempts).delay for _ in range(6)]
    for i, d in enumerate(delays):
        assert 2**i / 2 <= d <= 2**i


def test_the_policy_is_reproducible_with_a_seeded_rng() -> None:
    a = [policy(seed=5).backoff(3) for _ in range(3)]
    b = [policy(seed=5).backoff(3) for _ in range(3)]
    assert a == b
