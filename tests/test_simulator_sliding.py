"""The simulator's sliding-window limits, over real HTTP on 127.0.0.1 (issue 11).

A key in "sliding" mode lets any `window_s` seconds hold at most `limit * window_s / 60`
requests (or tokens). Most tests drive the window with a FakeClock, so what is refused does
not depend on the machine's speed; one runs on the real clock and checks the ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from squall.simulator import SimConfig, SimKey, Simulator, max_in_window
from squall.testing import FakeClock, start_simulator_process, stop_process

KEY = "sk-test-slide-aaaaaaaa1111"
Factory = Callable[..., Simulator]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def ask(
    session: aiohttp.ClientSession, base_url: str, prompt: str = "hello", **extra: Any
) -> tuple[int, dict[str, str], Any]:
    """Send one chat request with KEY; return the status, lower-cased headers and JSON body."""
    body = {"model": "sim-model", "messages": [{"role": "user", "content": prompt}], **extra}
    async with session.post(
        base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as r:
        headers = {k.lower(): v for k, v in r.headers.items()}
        return r.status, headers, await r.json(content_type=None)


def sliding(**kw: Any) -> SimConfig:
    """A config with KEY in sliding mode: `rpm`, `tpm`, `window_s` go to the key."""
    limits = {k: kw.pop(k) for k in ("rpm", "tpm", "window_s", "limit_mode") if k in kw}
    limits.setdefault("limit_mode", "sliding")
    return SimConfig(keys=(SimKey(key=KEY, **limits),), **kw)


async def statuses(session: aiohttp.ClientSession, sim: Simulator, n: int) -> list[int]:
    return [(await ask(session, sim.base_url, f"q{i}"))[0] for i in range(n)]


async def test_refuses_the_request_over_the_window_then_recovers(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(sliding(rpm=600, window_s=1.0, retry_after="ms"), clock=clock)  # 10 per 1 s
    assert await statuses(session, sim, 11) == [200] * 10 + [429]
    clock.advance(0.4)
    status, headers, body = await ask(session, sim.base_url, "still too soon")
    assert status == 429
    assert body["error"]["type"] == "requests"
    assert body["error"]["code"] == "rate_limit_exceeded"
    # The window frees up when the first request leaves it, 0.6 s from now.
    assert headers["retry-after"] == "1"
    assert headers["retry-after-ms"] == "600"
    clock.advance(0.6)
    assert await statuses(session, sim, 11) == [200] * 10 + [429]
    assert sim.served_count() == 20


@pytest.mark.parametrize(("mode", "passes"), [("sliding", False), ("bucket", True)])
async def test_two_bursts_half_a_window_apart_pass_only_a_bucket(
    simulator: Factory, session: aiohttp.ClientSession, mode: str, passes: bool
) -> None:
    clock = FakeClock()
    sim = simulator(sliding(rpm=600, window_s=1.0, limit_mode=mode), clock=clock)
    assert await statuses(session, sim, 5) == [200] * 5
    clock.advance(0.5)
    assert await statuses(session, sim, 5) == [200] * 5
    # The bucket refilled 5 in the half second; the window still holds all 10.
    assert (await ask(session, sim.base_url, "eleventh"))[0] == (200 if passes else 429)


async def test_any_window_counts_not_only_aligned_ones(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(sliding(rpm=600, window_s=1.0), clock=clock)
    assert await statuses(session, sim, 5) == [200] * 5
    clock.advance(0.5)
    assert await statuses(session, sim, 6) == [200] * 5 + [429]
    clock.advance(0.5)  # the first five left the window; the second five are still in it
    assert await statuses(session, sim, 6) == [200] * 5 + [429]
    status, headers, _ = await ask(session, sim.base_url, "late")
    assert status == 429 and headers["retry-after"] == "1"


async def test_tokens_per_minute_in_a_sliding_window(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(sliding(tpm=6000, window_s=1.0), clock=clock)  # 100 tokens per second
    # "q" costs 5 prompt tokens; max_tokens=45 is charged up front: 50 a request.
    assert (await ask(session, sim.base_url, "q", max_tokens=45))[0] == 200
    assert (await ask(session, sim.base_url, "q", max_tokens=45))[0] == 200
    status, _, body = await ask(session, sim.base_url, "q", max_tokens=45)
    assert status == 429 and body["error"]["type"] == "tokens"
    clock.advance(1.0)
    # Larger than the window: passes on an empty window, then nothing fits until it leaves.
    assert (await ask(session, sim.base_url, "q", max_tokens=500))[0] == 200
    assert (await ask(session, sim.base_url, "q", max_tokens=1))[0] == 429
    clock.advance(1.0)
    assert (await ask(session, sim.base_url, "q", max_tokens=1))[0] == 200


async def test_ratelimit_headers_and_changed_limits_keep_the_window(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(sliding(rpm=600, window_s=1.0, send_ratelimit_headers=True), clock=clock)
    for _ in range(3):
        status, headers, _ = await ask(session, sim.base_url)
    assert status == 200
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-remaining-requests"] == "420"  # 7 of 10 left, per minute
    assert headers["x-ratelimit-reset-requests"] == "1s"
    sim.set_key_limits(KEY, rpm=1200)  # 20 a window; the 3 already in it still count
    assert await statuses(session, sim, 18) == [200] * 17 + [429]
    clock.advance(1.0)
    assert await statuses(session, sim, 21) == [200] * 20 + [429]


async def test_on_the_real_clock_no_window_holds_more_than_the_limit(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(sliding(rpm=1200, window_s=0.5))  # 10 per half second
    start = time.monotonic()
    replies = []
    for i in range(2000):  # bounded; ends after 1.2 s
        replies.append((await ask(session, sim.base_url, f"r{i}"))[0])
        if time.monotonic() - start > 1.2:
            break
        await asyncio.sleep(0.002)  # a steady client, not a tight loop
    elapsed = time.monotonic() - start
    served = replies.count(200)
    assert set(replies) <= {200, 429} and 429 in replies
    assert max_in_window(sim.ledger(), KEY, 0.5 - 0.001) <= 10
    # Three windows began (at 0, >= 0.5, >= 1.0 s), and no more than the time allowed.
    assert 20 <= served <= 10 * (int(elapsed / 0.5) + 1)


async def test_the_mode_travels_to_a_simulator_process(session: aiohttp.ClientSession) -> None:
    # 60 rpm over 2 s windows holds 2 requests; a bucket 1 s deep would hold only 1.
    proc, base_url = start_simulator_process(sliding(rpm=60, window_s=2.0))
    try:
        got = [(await ask(session, base_url, f"p{i}"))[0] for i in range(3)]
    finally:
        stop_process(proc)
    assert got == [200, 200, 429]
