"""The real Engine on swapped ports: FakeTransport, MemoryJournal and a pool on a FakeClock.

No sockets and no sleeps: these prove that the engine needs only its ports, and pin its
scheduling, retries, cost cap and stopping. The evidence that squall works over real HTTP is
in test_engine.py and tests/cli.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from squall.config import EndpointConfig, KeyConfig, RetryConfig, RunConfig
from squall.engine import Engine, EngineOutcome
from squall.errors import BadRequest, JournalError, ServerError
from squall.events import RunStats
from squall.journal import Journal
from squall.journal_port import LocalJournal
from squall.pool import EndpointPool
from squall.ports import JournalPort, Lease, Usage
from squall.records import Completion, RequestSpec, RowState
from squall.redact import ApiKey
from squall.retry import RetryPolicy
from squall.testing import FakeClock, FakeTransport, JournalEvent, MemoryJournal

KEYS = [f"sk-ports-{c * 12}{i:04d}" for i, c in enumerate("abcd")]


def answer(lease: Lease, body: dict[str, Any]) -> Completion:
    """Echo the prompt back, so each answer can be matched to its request."""
    return Completion(
        text=body["messages"][-1]["content"].upper(),
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=5,
    )


def specs(n: int) -> list[RequestSpec]:
    return [
        RequestSpec(i, i + 1, {"messages": [{"role": "user", "content": f"row {i}"}]}, 10)
        for i in range(n)
    ]


def pool_of(*keys: dict[str, Any], clock: FakeClock) -> EndpointPool:
    ep = EndpointConfig(
        name="relay",
        base_url="http://127.0.0.1:9/v1",  # never dialled: the transport is fake
        keys=tuple(KeyConfig(**k) for k in keys),
    )
    return EndpointPool.from_config(RunConfig(model="m", endpoints=(ep,)), clock)


def engine(
    pool: EndpointPool,
    transport: FakeTransport,
    journal: JournalPort,
    clock: FakeClock,
    **kw: Any,
) -> Engine:
    retry = kw.pop("retry", RetryConfig(max_attempts=3, backoff_base_s=0.5, backoff_max_s=2.0))
    return Engine(
        pool=pool,
        transport=transport,
        journal=journal,
        retry=RetryPolicy(retry, random.Random(1)),
        clock=clock,
        stats=RunStats(total=kw.pop("total", 0)),
        **kw,
    )


async def test_requests_go_to_the_key_that_can_start_soonest() -> None:
    clock = FakeClock(start=100.0)
    pool = pool_of(
        {"key": ApiKey(KEYS[0]), "rpm": 600}, {"key": ApiKey(KEYS[1]), "rpm": 60}, clock=clock
    )
    transport = FakeTransport(answer)
    journal = MemoryJournal()
    outcome = await engine(pool, transport, journal, clock).run(specs(110))
    assert outcome == EngineOutcome("completed")
    by_key = Counter(lease.key for lease, _ in transport.requests)
    # 10/s and 1/s: the fast key takes ten times the work, and the run the sum's pace.
    assert by_key["relay#1"] == pytest.approx(100, abs=2)
    assert by_key["relay#2"] == pytest.approx(10, abs=2)
    assert clock.now() - 100.0 == pytest.approx(10.0, abs=0.3)
    assert all(a.text == f"ROW {i}" for i, a in journal.answers.items())


async def test_sent_is_recorded_before_each_request_leaves_and_done_after() -> None:
    clock = FakeClock()
    journal = MemoryJournal()

    def check(lease: Lease, body: dict[str, Any]) -> Completion:
        index = int(body["messages"][-1]["content"].split()[1])
        assert journal.states[index] is RowState.SENT  # on record before it left
        return answer(lease, body)

    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf}, clock=clock)
    await engine(pool, FakeTransport(check), journal, clock).run(specs(20))
    for i in range(20):
        mine = [e.verb for e in journal.events if e.index == i]
        assert mine == ["sent", "done"]
    assert journal.flushes == 1


async def test_sent_is_on_disk_before_the_request_leaves(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "j.sqlite"
    jr = Journal.open(path, group_commits=True)
    jr.check_settings("d", {}, input_name="t", row_fingerprint="2")
    jr.ingest((i, i + 1, f"fp{i}") for i in range(30))
    seen: list[int] = []

    def check(lease: Lease, body: dict[str, Any]) -> Completion:
        index = int(body["messages"][-1]["content"].split()[1])
        # Another connection sees only what was committed: "sent" must be there already.
        with Journal.open(path, read_only=True) as reader:
            states = {r.index: r.state for r in reader.iter_results()}
        assert states[index] is RowState.SENT
        seen.append(index)
        return answer(lease, body)

    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf, "max_concurrency": 8}, clock=clock)
    await engine(pool, FakeTransport(check), LocalJournal(jr), clock).run(specs(30))
    assert sorted(seen) == list(range(30))
    assert jr.statistics().done == 30
    jr.close()


async def test_retryable_errors_are_retried_within_their_budget_and_fatal_ones_are_not() -> None:
    clock = FakeClock()
    tries: Counter[int] = Counter()

    def flaky(lease: Lease, body: dict[str, Any]) -> Completion:
        index = int(body["messages"][-1]["content"].split()[1])
        tries[index] += 1
        if index == 0 and tries[index] <= 2:
            raise ServerError("HTTP 503", status=503)  # recovers on the third try
        if index == 1:
            raise ServerError("HTTP 500", status=500)  # never recovers
        if index == 2:
            raise BadRequest("HTTP 400: bad", status=400)  # a retry would repeat it
        return answer(lease, body)

    journal = MemoryJournal()
    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf}, clock=clock)
    eng = engine(pool, FakeTransport(flaky), journal, clock)
    assert (await eng.run(specs(5))).status == "completed"
    assert journal.states[0] is RowState.DONE and tries[0] == 3
    assert journal.states[1] is RowState.FAILED and tries[1] == 3  # max_attempts
    assert journal.errors[1].type == "server_error"
    assert journal.states[2] is RowState.FAILED and tries[2] == 1
    assert journal.errors[2].status == 400
    assert eng.stats.retries == 4 and eng.stats.failed == 2 and eng.stats.done == 3
    assert [e.verb for e in journal.events if e.index == 0] == [
        "sent",
        "retry",
        "sent",
        "retry",
        "sent",
        "done",
    ]
    # The retry delays were waited on the clock, not on the loop.
    assert clock.now() >= 0.5


async def test_the_cost_cap_stops_sending_before_the_spend_would_pass_it() -> None:
    clock = FakeClock()
    journal = MemoryJournal()
    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf, "max_concurrency": 4}, clock=clock)
    eng = engine(
        pool,
        FakeTransport(answer),
        journal,
        clock,
        cost=lambda model, pt, ct: 0.01,
        max_cost=0.105,
        est_cost=lambda spec: 0.01,
    )
    outcome = await eng.run(specs(50))
    assert outcome.status == "stopped" and outcome.reason is not None
    assert "cost cap" in outcome.reason
    assert len(journal.answers) == 10  # the 11th would pass $0.105
    assert eng.stats.cost == pytest.approx(0.10)


async def test_an_interrupt_lands_what_is_in_flight_within_the_grace() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(lease: Lease, body: dict[str, Any]) -> Completion:
        started.set()
        await release.wait()
        return answer(lease, body)

    journal = MemoryJournal()
    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf, "max_concurrency": 4}, clock=clock)
    eng = engine(pool, FakeTransport(slow), journal, clock, grace_s=30.0)
    run = asyncio.ensure_future(eng.run(specs(100)))
    await started.wait()
    await asyncio.sleep(0)
    eng.request_stop("interrupted")
    release.set()
    outcome = await run
    assert outcome == EngineOutcome("interrupted", "interrupted", 0)
    assert len(journal.answers) == 4  # the four in flight landed; nothing more was sent
    assert sum(journal.sent.values()) == 4


async def test_a_second_interrupt_cuts_what_is_in_flight() -> None:
    clock = FakeClock()
    started = asyncio.Event()

    async def hang(lease: Lease, body: dict[str, Any]) -> Completion:
        started.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    journal = MemoryJournal()
    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf, "max_concurrency": 3}, clock=clock)
    eng = engine(pool, FakeTransport(hang), journal, clock, grace_s=30.0)
    run = asyncio.ensure_future(eng.run(specs(10)))
    await started.wait()
    await asyncio.sleep(0)
    eng.request_stop("interrupted")
    eng.cut()
    outcome = await asyncio.wait_for(run, 5)
    assert outcome.status == "interrupted"
    assert outcome.cut_in_flight == 3
    assert not journal.answers
    assert all(state is RowState.SENT for state in journal.states.values())


async def test_two_engines_share_one_pool_within_its_limits() -> None:
    clock = FakeClock(start=50.0)
    pool = pool_of(
        {"key": ApiKey(KEYS[0]), "rpm": 1200}, {"key": ApiKey(KEYS[1]), "rpm": 600}, clock=clock
    )
    transport = FakeTransport(answer)
    journals = [MemoryJournal(), MemoryJournal()]
    engines = [engine(pool, transport, j, clock) for j in journals]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(e.run(specs(150)) for e in engines)), timeout=10
    )
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert [len(j.answers) for j in journals] == [150, 150]
    # 300 requests at the pool's 30/s, not each engine at the pool's full pace.
    assert clock.now() - 50.0 == pytest.approx(10.0, abs=0.3)
    times: dict[str, list[float]] = {}
    for lease, _ in transport.requests:
        times.setdefault(lease.key, []).append(lease.started)
    for key, per_s in (("relay#1", 20), ("relay#2", 10)):
        ts = sorted(times[key])
        worst = max(sum(1 for u in ts[i:] if u < t + 1.0 - 1e-9) for i, t in enumerate(ts))
        assert worst <= per_s + 1


async def test_the_pool_serves_every_waiter_in_arrival_order() -> None:
    clock = FakeClock()
    pool = pool_of({"key": ApiKey(KEYS[0]), "rpm": math.inf, "max_concurrency": 1}, clock=clock)
    first = await pool.acquire(10, None)
    order: list[int] = []

    async def wait_for_a_place(n: int) -> None:
        lease = await pool.acquire(10, None)
        order.append(n)
        await asyncio.sleep(0)
        await pool.release_ok(lease, _USAGE, None)

    waiters = [asyncio.ensure_future(wait_for_a_place(n)) for n in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert not order  # the one place is taken
    await pool.release_ok(first, _USAGE, None)
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert order == [0, 1, 2, 3, 4]


async def test_a_done_row_is_final_in_the_memory_journal_as_on_disk() -> None:
    journal = MemoryJournal()
    await journal.mark_sent(3)
    await journal.record_success(
        3, answer(_LEASE, {"messages": [{"content": "x"}]}), latency_s=0, attempts=1, endpoint="e"
    )
    with pytest.raises(JournalError, match="DONE"):
        await journal.mark_sent(3)
    assert journal.events == [JournalEvent("sent", 3), JournalEvent("done", 3)]


_LEASE = Lease("k", "e", "m", 1.0, 0.0)
_USAGE = Usage(1, 1)
