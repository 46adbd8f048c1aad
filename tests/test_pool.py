"""The endpoint pool on a FakeClock, no sockets: who gets each request, what answers teach it."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from typing import Any

import pytest

from squall.config import EndpointConfig, KeyConfig, RunConfig
from squall.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    RateLimited,
    RequestError,
    RunStopped,
    ServerError,
)
from squall.limits import SAFETY_MARGIN, RateInfo
from squall.pool import EndpointPool, KeyState, Lease
from squall.ports import Refusal, Usage
from squall.records import Completion
from squall.redact import ApiKey
from squall.testing import FakeClock

KEYS = [f"sk-pool-{c * 12}{i:04d}" for i, c in enumerate("abcdef")]
M = 1.0 + SAFETY_MARGIN  # how much longer than the limit's a paced interval is
OK = Completion(text="ok", finish_reason="stop", prompt_tokens=10, completion_tokens=5)


async def ok(
    pool: EndpointPool, lease: Lease, completion: Completion = OK, rate: RateInfo | None = None
) -> None:
    """Hand `lease` back as answered with `completion`'s usage."""
    usage = Usage(completion.prompt_tokens, completion.completion_tokens)
    await pool.release_ok(lease, usage, rate)


async def fail(
    pool: EndpointPool, lease: Lease, error: RequestError, rate: RateInfo | None = None
) -> None:
    """Hand `lease` back as failed with `error` (and the answer's rate headers)."""
    error.rate = rate
    await pool.release_error(lease, Refusal.of(error))


def endpoint(name: str, *keys: dict[str, Any] | str, **limits: Any) -> EndpointConfig:
    """An endpoint on a port nothing listens on: the pool never opens a socket."""
    return EndpointConfig(
        name=name,
        base_url=f"http://127.0.0.1:9/{name}/v1",
        keys=tuple(
            KeyConfig(key=ApiKey(k)) if isinstance(k, str) else KeyConfig(**k) for k in keys
        ),
        **limits,
    )


def make_pool(
    *endpoints: EndpointConfig, clock: FakeClock | None = None
) -> tuple[EndpointPool, FakeClock, list[str]]:
    clock = clock or FakeClock(start=1000.0)
    notices: list[str] = []
    cfg = RunConfig(model="m", endpoints=endpoints)
    return EndpointPool.from_config(cfg, clock, notify=notices.append), clock, notices


async def take_many(pool: EndpointPool, n: int, tokens: int = 10) -> list[Lease]:
    """Acquire `n` leases one after another, each answered at once."""
    leases = []
    for _ in range(n):
        lease = await pool.acquire(tokens, None)
        await ok(pool, lease, OK, None)
        leases.append(lease)
    return leases


def labels(leases: list[Lease]) -> Counter[str]:
    return Counter(lease.key for lease in leases)


# -- choosing a key -----------------------------------------------------------------------------


async def test_uneven_keys_get_shares_in_proportion_to_their_limits() -> None:
    pool, clock, _ = make_pool(
        endpoint(
            "relay",
            {"key": KEYS[0], "rpm": 1200},
            {"key": KEYS[1], "rpm": 600},
            {"key": KEYS[2], "rpm": 300},
        )
    )
    t0 = clock.now()
    leases = await take_many(pool, 700)
    got = labels(leases)
    # 20, 10 and 5 requests a second: 4/7, 2/7 and 1/7 of the work.
    assert got["relay#1"] == pytest.approx(400, abs=4)
    assert got["relay#2"] == pytest.approx(200, abs=4)
    assert got["relay#3"] == pytest.approx(100, abs=4)
    # The pool runs just under the sum of the limits (35/s), not at the slowest key's pace
    # times three. (Each answer came at once, so no cold-start allowance was needed.)
    assert clock.now() - t0 == pytest.approx(20.0 * M, abs=0.2)


async def test_each_key_stays_within_its_own_pace() -> None:
    pool, _, _ = make_pool(
        endpoint("relay", {"key": KEYS[0], "rpm": 600}, {"key": KEYS[1], "rpm": 60})
    )
    leases = await take_many(pool, 220)
    for label, rate_per_s in (("relay#1", 10), ("relay#2", 1)):
        times = [le.started for le in leases if le.key == label]
        for i, t in enumerate(times):
            in_window = sum(1 for u in times[i:] if u < t + 1.0 - 1e-9)
            # At most one early unit, and only where the window holds two or more.
            assert in_window <= rate_per_s + (1 if rate_per_s >= 2 else 0)


async def test_an_unlimited_key_starts_everything_at_once_up_to_its_concurrency() -> None:
    pool, clock, _ = make_pool(
        endpoint("local", {"key": KEYS[0], "max_concurrency": 3}, rpm=math.inf)
    )
    t0 = clock.now()
    leases = [await pool.acquire(10, None) for _ in range(3)]
    assert clock.now() == t0
    assert pool.max_in_flight == 3
    task = asyncio.ensure_future(pool.acquire(10, None))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()  # the fourth waits for a place
    await ok(pool, leases[0], OK, None)
    lease = await asyncio.wait_for(task, timeout=5)
    assert pool.slot(lease.key).in_flight == 3


async def test_concurrency_caps_send_the_overflow_to_the_other_key() -> None:
    pool, _, _ = make_pool(
        endpoint(
            "relay",
            {"key": KEYS[0], "max_concurrency": 2},
            {"key": KEYS[1], "max_concurrency": 5},
            rpm=math.inf,
        )
    )
    leases = [await pool.acquire(10, None) for _ in range(7)]
    got = labels(leases)
    assert got == {"relay#1": 2, "relay#2": 5}
    stats = {s.label: s for s in pool.statistics()}
    assert stats["relay#1"].in_flight == 2
    assert stats["relay#2"].in_flight == 5


async def test_equal_keys_share_the_load_evenly() -> None:
    pool, _, _ = make_pool(endpoint("relay", KEYS[0], KEYS[1], KEYS[2]))
    leases = [await pool.acquire(10, None) for _ in range(30)]
    assert set(labels(leases).values()) == {10}


async def test_token_limits_pace_by_estimated_tokens_then_by_usage() -> None:
    pool, clock, _ = make_pool(endpoint("relay", {"key": KEYS[0], "tpm": 60_000}))  # 1000/s
    t0 = clock.now()
    first = await pool.acquire(400, 100)  # books 500 tokens
    second = await pool.acquire(400, 100)
    assert second.started - first.started == pytest.approx(0.5 * M, abs=0.01)
    # The answer used far fewer tokens than booked: the schedule comes back.
    await ok(pool, first, Completion("x", "stop", 50, 50), None)
    await ok(pool, second, Completion("x", "stop", 50, 50), None)
    third = await pool.acquire(400, 100)
    assert third.started - second.started < 0.25 * M
    assert t0 == first.started
    assert first.tokens == 500


async def test_token_booking_without_max_tokens_learns_the_answer_length() -> None:
    pool, _, _ = make_pool(endpoint("relay", KEYS[0]))
    slot = pool.slots[0]
    assert slot.cost(100, None) == 100 + 64
    for _ in range(200):
        lease = await pool.acquire(100, None)
        await ok(pool, lease, Completion("x", "stop", 100, 500), None)
    assert slot.cost(100, None) == pytest.approx(600, rel=0.02)


# -- 429 and Retry-After ------------------------------------------------------------------------


async def test_a_429_cools_that_key_for_its_retry_after_and_others_carry_on() -> None:
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], KEYS[1], rpm=math.inf))
    a = await pool.acquire(10, None)
    b = await pool.acquire(10, None)
    assert {a.key, b.key} == {"relay#1", "relay#2"}
    t0 = clock.now()
    await fail(pool, a, RateLimited("HTTP 429", retry_after=5.0), None)
    await ok(pool, b, OK, None)
    states = {s.label: s.state for s in pool.statistics()}
    assert states[a.key] is KeyState.COOLING
    leases = [await pool.acquire(10, None) for _ in range(20)]
    assert clock.now() == t0  # nobody waited
    assert {le.key for le in leases} == {b.key}
    assert pool.slot(a.key).rate_limited == 1


async def test_a_single_key_waits_out_its_retry_after() -> None:
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf))
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await fail(pool, lease, RateLimited("HTTP 429", retry_after=3.5), None)
    nxt = await pool.acquire(10, None)
    assert nxt.started >= t0 + 3.5
    assert clock.now() == pytest.approx(t0 + 3.5)


async def test_a_429_without_retry_after_backs_off_longer_each_time() -> None:
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf))
    waits = []
    for _ in range(4):
        lease = await pool.acquire(10, None)
        t0 = clock.now()
        await fail(pool, lease, RateLimited("HTTP 429"), None)
        nxt = await pool.acquire(10, None)
        waits.append(nxt.started - t0)
        await fail(pool, nxt, ServerError("HTTP 500", status=500), None)
    assert waits == pytest.approx([0.5, 1.0, 2.0, 4.0])
    lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, None)
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await fail(pool, lease, RateLimited("HTTP 429"), None)
    assert (await pool.acquire(10, None)).started - t0 == pytest.approx(0.5)  # streak reset


async def test_late_429s_of_requests_sent_before_the_cut_count_once() -> None:
    # A gateway (LiteLLM) hands back the 429s of one burst over a second or more, with no
    # Retry-After: the first cools the key and cuts the rate; the others, for requests sent
    # before that cut, neither double the cooldown nor cut the rate again.
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0]))  # nothing declared: discovery
    burst = [await pool.acquire(10, None) for _ in range(8)]
    clock.advance(0.2)
    await fail(pool, burst[0], RateLimited("HTTP 429"), None)
    cut_at = clock.now()
    (after_first,) = pool.statistics()
    for lease in burst[1:]:
        clock.advance(0.15)
        await fail(pool, lease, RateLimited("HTTP 429"), None)
    (after_all,) = pool.statistics()
    assert after_all.rpm == after_first.rpm  # the rate was cut once
    nxt = await pool.acquire(10, None)
    assert nxt.started - cut_at <= 1.1  # cooled 0.5 s once, not doubled seven more times
    # A 429 for a request sent after the cut is news: it cools (and counts) again.
    clock.advance(1.0)
    await fail(pool, nxt, RateLimited("HTTP 429"), None)
    (again,) = pool.statistics()
    assert again.rpm is not None and after_all.rpm is not None and again.rpm < after_all.rpm


async def test_429s_within_a_round_trip_after_the_cut_count_with_it() -> None:
    # A loaded gateway answers 429s seconds late, and while it drains the queue built before
    # the cut it refuses what was sent right after the cut too. Those refusals belong to the
    # cut already made: the rate is not cut again to the lower rate seen while cooling.
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0]))  # nothing declared: discovery
    first = await pool.acquire(10, None)
    clock.advance(3.0)  # the 429 took three seconds to come back
    await fail(pool, first, RateLimited("HTTP 429"), None)
    (after_cut,) = pool.statistics()
    early = await pool.acquire(10, None)  # sent after the cut, within its round trip
    clock.advance(1.0)
    await fail(pool, early, RateLimited("HTTP 429"), None)
    (same,) = pool.statistics()
    assert same.rpm == after_cut.rpm
    clock.advance(3.0)  # past the cut's round trip: a refusal now is news
    late = await pool.acquire(10, None)
    clock.advance(0.05)
    await fail(pool, late, RateLimited("HTTP 429"), None)
    (again,) = pool.statistics()
    assert again.rpm is not None and after_cut.rpm is not None and again.rpm < after_cut.rpm


async def test_429_on_declared_key_lowers_pace_then_recovers() -> None:
    pool, clock, _ = make_pool(endpoint("relay", {"key": KEYS[0], "rpm": 600}))
    slot = pool.slots[0]
    in_flight = [await pool.acquire(10, None) for _ in range(3)]
    await fail(pool, in_flight[0], RateLimited("HTTP 429", retry_after=1.0), None)
    assert slot.requests.per_minute == pytest.approx(600 * 0.97)  # a little lower
    # The others were sent at the old pace: their 429s do not cut it again.
    for lease in in_flight[1:]:
        await fail(pool, lease, RateLimited("HTTP 429", retry_after=1.0), None)
    assert slot.requests.per_minute == pytest.approx(600 * 0.97)
    assert slot.statistics(clock.now(), False).state is KeyState.COOLING  # Retry-After holds
    for _ in range(60):  # refused again and again, each sent after the last cut
        lease = await pool.acquire(10, None)
        await fail(pool, lease, RateLimited("HTTP 429", retry_after=0.1), None)
    assert slot.requests.per_minute == pytest.approx(600 * 0.3)  # never below 30%
    # Recovery is slow: one step of 1% per five seconds of answers without a 429.
    t0 = clock.now()
    while clock.now() - t0 < 30.0:
        lease = await pool.acquire(10, None)
        await ok(pool, lease, OK, None)
    assert slot.requests.per_minute == pytest.approx(600 * 0.36, abs=6)
    while clock.now() - t0 < 400.0:
        lease = await pool.acquire(10, None)
        await ok(pool, lease, OK, None)
    assert slot.requests.per_minute == pytest.approx(600)  # and back to the declared pace


async def test_refusals_above_a_concurrency_cap_narrow_the_window_without_cooling() -> None:
    # No pace in force (rpm = inf), 8 requests out at once, the 4th..8th refused: a cap on
    # requests in flight, not a rate. The key is not cooled; it just sends fewer at once.
    pool, clock, notices = make_pool(endpoint("relay", KEYS[0], rpm=math.inf, max_concurrency=8))
    slot = pool.slots[0]
    leases = [await pool.acquire(10, None) for _ in range(8)]
    assert [le.in_flight for le in leases] == list(range(1, 9))
    for lease in leases[3:]:
        await fail(pool, lease, RateLimited("HTTP 429", retry_after=5.0), None)
    assert slot.window.size == 3  # one below the first refused level (4)
    assert slot.blocked_until <= clock.now()  # not cooled for the Retry-After
    (stats,) = pool.statistics()
    assert stats.state is KeyState.ACTIVE and stats.window == 3
    assert len(notices) == 1 and "refuses more than 3 request(s) at once" in notices[0]
    assert KEYS[0] not in notices[0]
    # 3 still in flight: a 4th must wait for one of them.
    waiter = asyncio.ensure_future(pool.acquire(10, None))
    await asyncio.sleep(0)
    assert not waiter.done()
    await ok(pool, leases[0], OK, None)
    again = await asyncio.wait_for(waiter, 1)
    assert pool.slot(again.key) is slot and clock.now() == pytest.approx(1000.0)


async def test_the_window_grows_back_one_step_per_ten_busy_seconds_up_to_the_cap() -> None:
    pool, clock, notices = make_pool(endpoint("relay", KEYS[0], rpm=math.inf, max_concurrency=6))
    slot = pool.slots[0]
    leases = [await pool.acquire(10, None) for _ in range(6)]
    await fail(pool, leases[2], RateLimited("HTTP 429"), None)  # refused at 3 in flight
    assert slot.window.size == 2
    for lease in leases[:2] + leases[3:]:
        await ok(pool, lease, OK, None)
    sizes = []
    for _ in range(12):
        clock.advance(10.0)
        held = [await pool.acquire(10, None) for _ in range(slot.window.size)]  # kept full
        for lease in held:
            await ok(pool, lease, OK, None)
        sizes.append(slot.window.size)
    assert sizes[:4] == [3, 4, 5, 6] and max(sizes) == 6  # never above max_concurrency
    assert len(notices) == 1  # growing back is not news


async def test_a_refusal_below_levels_that_succeeded_is_not_taken_for_a_cap() -> None:
    # Requests at 1..4 in flight succeeded; then one at 2 is refused: an overloaded upstream,
    # not a cap of 1. The key cools for its Retry-After, and the window stays.
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf, max_concurrency=8))
    slot = pool.slots[0]
    leases = [await pool.acquire(10, None) for _ in range(4)]
    for lease in leases:
        await ok(pool, lease, OK, None)
    a = await pool.acquire(10, None)
    b = await pool.acquire(10, None)
    assert b.in_flight == 2
    await fail(pool, b, RateLimited("HTTP 429", retry_after=2.0), None)
    assert slot.window.size == 8
    assert slot.blocked_until == pytest.approx(clock.now() + 2.0)
    # Said in words, the same refusal does narrow it: the provider knows its own cap.
    await fail(
        pool, a, RateLimited("HTTP 429: 并发数过高", retry_after=2.0, concurrency=True), None
    )
    assert slot.window.size == 8  # a was sent at 1 in flight: nothing narrower to try
    c = [await pool.acquire(10, None) for _ in range(3)]
    await fail(pool, c[2], RateLimited("too many", concurrency=True), None)
    assert slot.window.size == 2


async def test_a_paced_key_cools_on_a_plain_429_but_narrows_on_a_worded_one() -> None:
    pool, clock, _ = make_pool(endpoint("relay", {"key": KEYS[0], "rpm": 60000}))
    slot = pool.slots[0]
    leases = [await pool.acquire(10, None) for _ in range(5)]
    await fail(pool, leases[4], RateLimited("HTTP 429", retry_after=1.0), None)
    assert slot.window.size == slot.max_concurrency  # a rate limit, as far as anyone knows
    assert slot.blocked_until > clock.now()
    assert slot.requests.per_minute == pytest.approx(60000 * 0.97)
    await fail(pool, leases[3], RateLimited("Too many concurrent requests", concurrency=True), None)
    assert slot.window.size == 3
    assert slot.requests.per_minute == pytest.approx(60000 * 0.97)  # the pace is not blamed


# -- dead keys ----------------------------------------------------------------------------------


async def test_a_dead_key_leaves_the_pool_with_a_masked_notice() -> None:
    pool, _, notices = make_pool(endpoint("relay", KEYS[0], KEYS[1], rpm=math.inf))
    a = await pool.acquire(10, None)
    b = await pool.acquire(10, None)
    dead = pool.slot(a.key)
    await fail(pool, a, AuthError("HTTP 401: bad key", status=401), None)
    await ok(pool, b, OK, None)
    assert len(notices) == 1
    assert dead.masked in notices[0] and "401" in notices[0]
    assert KEYS[0] not in notices[0]
    leases = await take_many(pool, 10)
    assert {le.key for le in leases} == {b.key}
    assert {s.label: s.state for s in pool.statistics()}[dead.label] is KeyState.DEAD


async def test_no_key_left_stops_the_run() -> None:
    pool, _, notices = make_pool(endpoint("relay", KEYS[0]), endpoint("other", KEYS[1]))
    a = await pool.acquire(10, None)
    b = await pool.acquire(10, None)
    await fail(pool, a, AuthError("HTTP 401", status=401), None)
    assert pool.live()
    await fail(pool, b, AuthError("HTTP 403", status=403), None)
    assert not pool.live()
    assert len(notices) == 2
    with pytest.raises(RunStopped, match="no usable key"):
        await pool.acquire(10, None)


async def test_the_last_key_dying_wakes_a_waiting_acquire_with_run_stopped() -> None:
    pool, _, _ = make_pool(endpoint("relay", {"key": KEYS[0], "max_concurrency": 1}))
    lease = await pool.acquire(10, None)
    waiter = asyncio.ensure_future(pool.acquire(10, None))
    await asyncio.sleep(0)
    assert not waiter.done()
    await fail(pool, lease, AuthError("HTTP 401", status=401), None)
    with pytest.raises(RunStopped):
        await asyncio.wait_for(waiter, timeout=5)


def test_a_pool_without_keys_is_refused() -> None:
    with pytest.raises(RunStopped, match="no key"):
        EndpointPool([], FakeClock())


# -- endpoints that refuse connections ----------------------------------------------------------


async def test_a_refusing_endpoint_rests_and_is_tried_again_later() -> None:
    pool, clock, notices = make_pool(
        endpoint("down", KEYS[0], rpm=math.inf), endpoint("up", KEYS[1], rpm=math.inf)
    )
    leases = [await pool.acquire(10, None) for _ in range(2)]
    down = next(le for le in leases if le.endpoint == "down")
    up = next(le for le in leases if le.endpoint == "up")
    t0 = clock.now()
    await fail(pool, down, ConnectionLost("refused", refused=True), None)
    await ok(pool, up, OK, None)
    assert notices and "down" in notices[0]
    assert {s.endpoint: s.state for s in pool.statistics()}["down"] is KeyState.RESTING
    during = [await pool.acquire(10, None) for _ in range(10)]
    assert {le.endpoint for le in during} == {"up"}
    for le in during:
        await ok(pool, le, OK, None)
    # Once its rest is over it gets work again (the "up" key is held busy meanwhile).
    clock.advance(1.0)
    assert clock.now() >= t0 + 1.0
    later = [await pool.acquire(10, None) for _ in range(4)]
    assert "down" in {le.endpoint for le in later}


async def _answered_once(pool: EndpointPool) -> Lease:
    """Let the pool's endpoint answer once (so it gets the long patience), then lease again."""
    await ok(pool, await pool.acquire(10, None), OK, None)
    return await pool.acquire(10, None)


async def test_rests_grow_while_refusals_continue_and_reset_after_a_success() -> None:
    pool, clock, _ = make_pool(endpoint("down", KEYS[0], rpm=math.inf))
    lease = await _answered_once(pool)
    rests = []
    for _ in range(8):
        t0 = clock.now()
        await fail(pool, lease, ConnectionLost("refused", refused=True), None)
        lease = await pool.acquire(10, None)
        rests.append(lease.started - t0)
    assert rests == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60])
    await ok(pool, lease, OK, None)
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await fail(pool, lease, ConnectionLost("refused", refused=True), None)
    assert (await pool.acquire(10, None)).started - t0 == pytest.approx(1.0)


async def test_every_endpoint_unreachable_too_long_stops_the_run_resumably() -> None:
    pool, clock, _ = make_pool(endpoint("down", KEYS[0], rpm=math.inf))
    lease = await _answered_once(pool)
    with pytest.raises(RunStopped, match="no endpoint reachable for 300s"):
        for _ in range(50):  # bounded: rests grow to 60 s, so this passes 300 s well before
            await fail(pool, lease, ConnectionLost("refused", refused=True), None)
            lease = await pool.acquire(10, None)
    assert clock.now() - 1000.0 >= 300.0


async def test_an_answer_ends_the_outage_clock() -> None:
    pool, clock, _ = make_pool(endpoint("down", KEYS[0], rpm=math.inf))
    lease = await _answered_once(pool)
    for _ in range(6):  # 1+2+4+8+16+32 s of rests: 63 s down
        await fail(pool, lease, ConnectionLost("refused", refused=True), None)
        lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, None)
    clock.advance(280.0)
    lease = await pool.acquire(10, None)
    # A new outage starts its own count: one refusal now does not stop the run.
    await fail(pool, lease, ConnectionLost("refused", refused=True), None)
    assert (await pool.acquire(10, None)).endpoint == "down"


async def test_an_endpoint_that_never_answered_is_given_up_within_seconds() -> None:
    # A mistyped base URL: no endpoint has answered in this run, so the run stops after a
    # few refusals (at 0, 1 and 3 s), not after `unreachable_after_s`, and names the URL.
    pool, clock, _ = make_pool(endpoint("typo", KEYS[0], rpm=math.inf))
    t0 = clock.now()
    lease = await pool.acquire(10, None)
    with pytest.raises(RunStopped, match=r"cannot connect to typo \(http://[^)]+\)") as info:
        for _ in range(10):  # bounded: it stops at the third refusal
            await fail(pool, lease, ConnectionLost("refused", refused=True), None)
            lease = await pool.acquire(10, None)
    assert clock.now() - t0 == pytest.approx(3.0)
    assert "base_url" in str(info.value)


async def test_one_endpoint_that_answered_keeps_the_long_patience_for_all() -> None:
    # "up" answered once and then went down too: the long patience holds for the run.
    pool, clock, _ = make_pool(
        endpoint("up", KEYS[0], rpm=math.inf), endpoint("typo", KEYS[1], rpm=math.inf)
    )
    leases = [await pool.acquire(10, None) for _ in range(2)]
    for le in leases:
        if le.endpoint == "up":
            await ok(pool, le, OK, None)
        else:
            await fail(pool, le, ConnectionLost("refused", refused=True), None)
    for _ in range(8):  # both refuse for a while: well past three refusals each
        le = await pool.acquire(10, None)
        await fail(pool, le, ConnectionLost("refused", refused=True), None)
    assert clock.now() - 1000.0 < 300.0
    assert pool.live()


async def test_refusals_of_requests_already_in_flight_count_as_one_outage() -> None:
    pool, clock, notices = make_pool(endpoint("down", KEYS[0], KEYS[1], rpm=math.inf))
    leases = [await pool.acquire(10, None) for _ in range(20)]
    t0 = clock.now()
    for lease in leases:
        await fail(pool, lease, ConnectionLost("refused", refused=True), None)
    assert len(notices) == 1
    # One outage: a rest of one second, not one doubled for each refused request.
    assert (await pool.acquire(10, None)).started - t0 == pytest.approx(1.0)


async def test_after_a_rest_one_probe_goes_first_and_the_rest_wait_for_its_answer() -> None:
    pool, clock, _ = make_pool(endpoint("down", KEYS[0], KEYS[1], rpm=math.inf))
    first = await pool.acquire(10, None)
    await fail(pool, first, ConnectionLost("refused", refused=True), None)
    probe = await pool.acquire(10, None)
    assert probe.probe
    waiter = asyncio.ensure_future(pool.acquire(10, None))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()  # both keys of the endpoint wait for the probe
    t_probe = clock.now()
    await ok(pool, probe, OK, None)
    nxt = await asyncio.wait_for(waiter, timeout=5)
    assert not nxt.probe and nxt.started == t_probe
    more = [await pool.acquire(10, None) for _ in range(5)]
    assert not any(le.probe for le in more)


async def test_a_refused_probe_rests_the_endpoint_longer() -> None:
    pool, clock, _ = make_pool(
        endpoint("down", KEYS[0], rpm=math.inf), endpoint("up", KEYS[1], rpm=math.inf)
    )
    leases = [await pool.acquire(10, None) for _ in range(2)]
    for le in leases:
        if le.endpoint == "down":
            await fail(pool, le, ConnectionLost("refused", refused=True), None)
        else:
            await ok(pool, le, OK, None)
    clock.advance(1.0)
    got = [await pool.acquire(10, None) for _ in range(4)]
    probes = [le for le in got if le.probe]
    assert len(probes) == 1 and probes[0].endpoint == "down"
    assert [le.endpoint for le in got].count("down") == 1
    t0 = clock.now()
    await fail(pool, probes[0], ConnectionLost("refused", refused=True), None)
    assert {s.endpoint: s.state for s in pool.statistics()}["down"] is KeyState.RESTING
    clock.advance(1.5)
    assert {s.endpoint: s.state for s in pool.statistics()}["down"] is KeyState.RESTING
    clock.advance(0.5)
    assert clock.now() - t0 == pytest.approx(2.0)
    assert {s.endpoint: s.state for s in pool.statistics()}["down"] is KeyState.ACTIVE


async def test_a_reset_mid_answer_does_not_rest_the_endpoint() -> None:
    pool, clock, notices = make_pool(endpoint("flaky", KEYS[0], rpm=math.inf))
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await fail(pool, lease, ConnectionLost("reset"), None)
    assert (await pool.acquire(10, None)).started == t0
    assert notices == []


async def test_row_errors_do_not_cool_or_kill_the_key() -> None:
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf))
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await fail(pool, lease, BadRequest("HTTP 400", status=400), None)
    lease = await pool.acquire(10, None)
    await fail(pool, lease, ServerError("HTTP 500", status=500), None)
    assert (await pool.acquire(10, None)).started == t0
    assert pool.slots[0].errors == 2
    assert pool.live()


# -- x-ratelimit headers ------------------------------------------------------------------------


async def test_a_limit_header_lowers_the_pace_throughout_the_run() -> None:
    pool, _, _ = make_pool(endpoint("relay", {"key": KEYS[0], "rpm": 600}))
    slot = pool.slots[0]
    lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, RateInfo(limit_requests=120, remaining_requests=100))
    assert slot.requests.per_minute == 120
    lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, RateInfo(limit_requests=60, remaining_requests=50))
    assert slot.requests.per_minute == 60  # followed again, not only once
    lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, RateInfo(limit_requests=6000, limit_tokens=90_000))
    assert slot.requests.per_minute == 600  # a header never raises a declared limit
    assert slot.tokens.per_minute == 90_000
    leases = await take_many(pool, 5)
    gaps = [b.started - a.started for a, b in itertools.pairwise(leases[1:])]
    assert gaps == pytest.approx([0.1 * M] * 3)


async def test_headers_pace_an_undeclared_key_instead_of_discovery() -> None:
    pool, _, _ = make_pool(endpoint("relay", KEYS[0]))
    slot = pool.slots[0]
    assert slot.discovery is not None
    assert slot.requests.per_minute == slot.discovery.rate
    lease = await pool.acquire(10, None)
    await ok(pool, lease, OK, RateInfo(limit_requests=90))
    assert slot.requests.per_minute == 90
    assert not next(iter(pool.statistics())).discovering


async def test_zero_remaining_blocks_the_key_until_the_reset() -> None:
    # No limit known (rpm = inf, none in the headers): a spent budget holds until the reset.
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], KEYS[1], rpm=math.inf))
    a = await pool.acquire(10, None)
    t0 = clock.now()
    await ok(pool, a, OK, RateInfo(remaining_requests=0, reset_requests_s=2.0))
    assert {s.label: s.state for s in pool.statistics()}[a.key] is KeyState.COOLING
    others = [await pool.acquire(10, None) for _ in range(3)]
    assert a.key not in {le.key for le in others}
    for le in others:
        await ok(pool, le, OK, None)
    # Alone, the blocked key is waited for until the reset.
    solo, clock2, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf))
    lease = await solo.acquire(10, None)
    t1 = clock2.now()
    await ok(solo, lease, OK, RateInfo(remaining_tokens=0, reset_tokens_s=1.5))
    assert (await solo.acquire(10, None)).started == pytest.approx(t1 + 1.5)
    assert t0 == clock.now()


async def test_zero_remaining_under_a_known_limit_waits_for_one_request_not_the_reset() -> None:
    # Paced under a known limit, the budget comes back a request at a time (a sliding window's
    # oldest request leaves it): waiting the whole reset would halve a sliding window's rate.
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf))
    lease = await pool.acquire(10, None)
    t0 = clock.now()
    await ok(
        pool,
        lease,
        OK,
        RateInfo(limit_requests=600, remaining_requests=0, reset_requests_s=1.0),
    )
    assert (await pool.acquire(10, None)).started == pytest.approx(t0 + 0.1)
    tokens, clock2, _ = make_pool(endpoint("relay", KEYS[0], rpm=math.inf, tpm=60_000))
    lease = await tokens.acquire(90, 10)  # 100 tokens: a tenth of a second at 1,000 a second
    t1 = clock2.now()
    await ok(tokens, lease, OK, RateInfo(remaining_tokens=0, reset_tokens_s=1.5))
    assert (await tokens.acquire(90, 10)).started == pytest.approx(t1 + 0.1)


async def test_headers_on_an_error_are_followed_too() -> None:
    pool, _, _ = make_pool(endpoint("relay", KEYS[0]))
    lease = await pool.acquire(10, None)
    await fail(pool, lease, RateLimited("HTTP 429", retry_after=0.5), RateInfo(limit_requests=30))
    assert pool.slots[0].requests.per_minute is not None
    assert pool.slots[0].requests.per_minute <= 30


# -- limits nobody declared ---------------------------------------------------------------------


class Bucket:
    """A provider's per-key token bucket over a one-second window, on fake time."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.stamp = 0.0

    def take(self, now: float) -> float | None:
        """Take one request; return None if it fits, else seconds until it would."""
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return None
        return (1.0 - self.level) / self.rate


@pytest.mark.parametrize("limit_rpm", [60, 300, 1200, 12000])
async def test_discovery_settles_just_under_an_undeclared_limit(limit_rpm: float) -> None:
    pool, clock, _ = make_pool(endpoint("relay", KEYS[0]), clock=FakeClock(start=0.5))
    slot = pool.slots[0]
    bucket = Bucket(limit_rpm)
    bucket.stamp = clock.now()
    refused = 0
    sent = 0
    while clock.now() < 240.0 and sent < 10_000:
        lease = await pool.acquire(10, None)
        sent += 1
        wait = bucket.take(clock.now())
        if wait is None:
            await ok(pool, lease, OK, None)
        else:
            refused += 1
            await fail(pool, lease, RateLimited("HTTP 429", retry_after=math.ceil(wait)), None)
    assert slot.discovery is not None and slot.discovery.ceiling is not None
    # It settles just under the limit: most of the rate, and few refusals on the way.
    # (It probes a little past its last ceiling between 429s, as it must to follow a limit.)
    assert 0.75 * limit_rpm <= 60.0 / slot.requests.interval <= 1.05 * limit_rpm
    served_rate = (sent - refused) / (clock.now() - 0.5) * 60.0
    assert served_rate >= 0.75 * limit_rpm
    assert refused <= 0.05 * sent


async def test_rate_now_counts_every_request_of_a_fast_key() -> None:
    pool, clock, _ = make_pool(endpoint("local", KEYS[0], rpm=math.inf))
    for _ in range(6000):  # 1000 requests a second for six seconds
        lease = await pool.acquire(10, None)
        await ok(pool, lease, OK, None)
        clock.advance(0.001)
    (stats,) = pool.statistics()
    assert stats.rate_now == pytest.approx(1000, rel=0.01)
    assert stats.sent == stats.ok == 6000


async def test_an_unknown_limit_lets_requests_due_within_a_moment_go_together() -> None:
    # Discovery paces an undeclared key only to probe growth: the requests due in the next
    # EARLY_S leave in one turn (one journal commit), keeping the schedule.
    from squall.keyslot import EARLY_S

    pool, clock, _ = make_pool(endpoint("e", KEYS[0], max_concurrency=1000))
    slot = pool.slots[0]
    slot.requests.set_rate(60.0 / (EARLY_S / 4))  # a quarter of EARLY_S between requests
    leases = [await pool.acquire(10, None) for _ in range(4)]
    assert {lease.started for lease in leases} == {clock.now()}  # no wait in between
    # A declared limit is paced exactly: the next request waits for its turn.
    declared, _clock, _ = make_pool(endpoint("d", KEYS[1], rpm=60.0 / (EARLY_S / 4)))
    first = await declared.acquire(10, None)
    second = await asyncio.wait_for(declared.acquire(10, None), timeout=5.0)
    assert second.started > first.started
    # Once a 429 has marked a ceiling, the undeclared key is paced exactly too.
    await fail(pool, leases[0], RateLimited("HTTP 429", retry_after=None))
    assert slot.early_s == 0.0
