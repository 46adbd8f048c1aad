"""Pacing against providers' sliding windows, and discovery's speed (issue 11), on a FakeClock.

The provider here is the simulator's own sliding window (`squall.simulator.limits`), driven
with the pool's fake time: what is refused depends on the pacing alone, never on the machine.
"""

from __future__ import annotations

import math
import random

import pytest

from squall.config import EndpointConfig, KeyConfig, RunConfig
from squall.errors import RateLimited
from squall.limits import RateInfo
from squall.pool import EndpointPool, Lease
from squall.ports import Refusal, Usage
from squall.redact import ApiKey
from squall.simulator.limits import SlidingWindow
from squall.testing import FakeClock

KEY = "sk-pacing-aaaaaaaaaaaa0001"
USAGE = Usage(10, 5)


def pool_of(rpm: float | None, clock: FakeClock) -> EndpointPool:
    key = KeyConfig(key=ApiKey(KEY), rpm=rpm)
    ep = EndpointConfig(name="relay", base_url="http://127.0.0.1:9/v1", keys=(key,))
    return EndpointPool.from_config(RunConfig(model="m", endpoints=(ep,)), clock)


def most_in_window(times: list[float], window: float = 1.0) -> int:
    """The most times within any half-open span of `window` seconds (the simulator's count)."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def refuse(pool: EndpointPool, lease: Lease, retry_after: float | None) -> None:
    await pool.release_error(lease, Refusal.of(RateLimited("HTTP 429", retry_after=retry_after)))


@pytest.mark.parametrize("per_second", [4, 20, 40])
async def test_declared_limit_on_a_sliding_window_is_never_crowded_by_jitter(
    per_second: int,
) -> None:
    clock = FakeClock(start=100.0)
    pool = pool_of(per_second * 60.0, clock)
    rng = random.Random(per_second)
    arrivals = []
    for _ in range(per_second * 30):
        lease = await pool.acquire(10, None)
        # Up to 15 ms between booking and reaching the provider, and the loop waking up to
        # 10 ms late: the pace catches up on the lateness but never crowds a window.
        arrivals.append(lease.started + rng.uniform(0.0, 0.015))
        await pool.release_ok(lease, USAGE, None)
        if rng.random() < 0.3:
            clock.advance(rng.uniform(0.0, 0.01))
    assert most_in_window(arrivals) <= per_second
    # And it still uses almost all of the limit.
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate >= 0.95 * per_second


async def drive(
    pool: EndpointPool, clock: FakeClock, window: SlidingWindow, until: float, retry: bool
) -> list[tuple[float, bool]]:
    """Send one request after another until `until`, refused by `window` as a provider would;
    return (time, served) for each."""
    log = []
    while clock.now() < until:
        lease = await pool.acquire(10, None)
        now = clock.now()
        wait = window.wait_s(1, now)
        if wait > 0:
            await refuse(pool, lease, max(1, math.ceil(wait)) if retry else None)
            log.append((now, False))
        else:
            window.take(1, now)
            await pool.release_ok(lease, USAGE, None)
            log.append((now, True))
    return log


@pytest.mark.parametrize("retry", [True, False], ids=["retry-after", "no-retry-after"])
@pytest.mark.parametrize("limit_rpm", [600.0, 2400.0])
async def test_discovery_reaches_most_of_an_undeclared_limit_within_ten_seconds_of_the_first_429(
    limit_rpm: float, retry: bool
) -> None:
    clock = FakeClock(start=0.5)
    pool = pool_of(None, clock)
    window = SlidingWindow(limit_rpm, 1.0)
    log = await drive(pool, clock, window, 60.0, retry)
    first_429 = next(t for t, served in log if not served)
    later = [t for t, served in log if served and first_429 + 10.0 <= t < first_429 + 30.0]
    assert len(later) / 20.0 >= 0.9 * limit_rpm / 60.0
    refused = sum(1 for _, served in log if not served)
    assert refused <= 0.03 * len(log)


async def test_discovery_on_an_unlimited_endpoint_is_soon_paced_by_nothing_but_the_endpoint() -> (
    None
):
    # An endpoint that answers 3,333 requests a second and never refuses one, for six seconds
    # (20,000 requests): discovering gets most of what declaring `rpm = inf` gets.
    sent: dict[str, list[float]] = {}
    for name, rpm in (("discover", None), ("inf", math.inf)):
        clock = FakeClock(start=0.5)
        pool = pool_of(rpm, clock)
        times = sent.setdefault(name, [])
        while clock.now() < 6.5:
            lease = await pool.acquire(10, None)
            await pool.release_ok(lease, USAGE, None)
            times.append(clock.now())
            clock.advance(0.0003)
    assert len(sent["discover"]) >= 0.8 * len(sent["inf"])
    # Slow start doubles each busy step: from 10 a second to the endpoint's rate in about a
    # second, and then it is the endpoint that paces the key.
    late = [t for t in sent["discover"] if t >= 2.5]
    assert len(late) / 4.0 >= 0.95 * len([t for t in sent["inf"] if t >= 2.5]) / 4.0


async def test_a_sliding_window_saying_nothing_remains_costs_one_request_not_the_reset() -> None:
    # A provider counting a sliding window sends remaining 0 whenever the window is full,
    # which a pace just under the limit makes it often; its reset (the window emptying) is
    # about a second away. Waiting for it each time would halve the rate.
    clock = FakeClock(start=0.5)
    pool = pool_of(2400.0, clock)
    window = SlidingWindow(2400.0, 1.0)
    served = spent = 0
    while clock.now() < 20.5:
        lease = await pool.acquire(10, None)
        now = clock.now()
        assert window.wait_s(1, now) == 0  # never refused
        window.take(1, now)
        served += 1
        remaining = window.remaining_per_min(now)
        spent += remaining == 0
        rate = RateInfo(2400, remaining, window.reset_s(now))
        await pool.release_ok(lease, USAGE, rate)
    assert spent >= 100  # the budget was often spent
    assert served / 20.0 >= 0.95 * 40
