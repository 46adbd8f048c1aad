"""The cluster's key budget (`squall.ray.budget`): pure arithmetic, no Ray needed.

It is what keeps N workers from each believing they own a key's whole limit: every slot
of a key comes from one schedule, whoever asks.
"""

from __future__ import annotations

import itertools
import math

from squall.limits import RateInfo
from squall.ports import Usage
from squall.ray.budget import ClusterBudget, KeyBudget, Report, Slot
from squall.ray.remote_pool import RemotePool

ALL = 10_000


def key(
    name: str, rpm: float | None, *, concurrency: int = 1000, tpm: float | None = None
) -> KeyBudget:
    return KeyBudget(name, "ep", "m", rpm=rpm, tpm=tpm, concurrency=concurrency)


def drain(budget: ClusterBudget, seconds: float, workers: int = 3) -> list[tuple[int, str, float]]:
    """Lease as workers would, asking in turn every 50 ms; return (worker, key, at)."""
    out: list[tuple[int, str, float]] = []
    now = 1000.0
    end = now + seconds
    tick = 0
    while now < end:
        tick += 1
        for i in range(workers):
            w = (i + tick) % workers  # who asks first changes, as it does between processes
            for s in budget.lease(now, 8, 10.0, worker=w):
                out.append((w, s.key, s.at))
                budget.report(now, [Report(s.key, "ok")], worker=w)
        now += 0.05
    return out


def test_slots_of_a_key_are_evenly_spaced_whichever_worker_holds_them() -> None:
    budget = ClusterBudget([key("a", 600)])  # 10/s
    got = drain(budget, 5.0)
    times = sorted(at for _, _, at in got)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.1 * 0.999  # one pace apart, never a burst per worker
    assert {w for w, _, _ in got} == {0, 1, 2}
    # at most the limit in any one-second window
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 10


def test_uneven_keys_are_each_used_to_their_own_limit() -> None:
    budget = ClusterBudget([key("fast", 1200), key("mid", 600), key("slow", 120)])
    got = drain(budget, 10.0)
    per = {k: sum(1 for _, kk, _ in got if kk == k) for k in ("fast", "mid", "slow")}
    assert per["fast"] / 200 >= 0.95 and per["fast"] <= 201
    assert per["mid"] / 100 >= 0.95 and per["mid"] <= 101
    assert per["slow"] / 20 >= 0.9 and per["slow"] <= 21


def test_no_slot_reaches_past_the_horizon() -> None:
    budget = ClusterBudget([key("a", 60)], horizon_s=0.5)  # 1/s
    first = budget.lease(0.0, 10, 1.0)
    assert len(first) == 1
    assert budget.lease(0.1, 10, 1.0) == []  # the next is ~1 s away


def test_concurrency_counts_slots_until_they_are_reported_back() -> None:
    budget = ClusterBudget([key("a", math.inf, concurrency=4)])
    slots = budget.lease(0.0, 10, 1.0, worker=1)
    assert len(slots) == 4
    assert budget.lease(0.0, 10, 1.0, worker=2) == []
    budget.report(0.0, [Report("a", "ok")], worker=1)
    assert len(budget.lease(0.0, 10, 1.0, worker=2)) == 1


def test_a_lost_workers_slots_are_forgotten() -> None:
    budget = ClusterBudget([key("a", math.inf, concurrency=4)])
    assert len(budget.lease(0.0, 3, 1.0, worker=7)) == 3
    assert len(budget.lease(0.0, 9, 1.0, worker=8)) == 1
    assert budget.forget(7) == 3
    assert len(budget.lease(0.0, 9, 1.0, worker=8)) == 3


def test_a_429_from_one_worker_moves_the_key_for_all() -> None:
    budget = ClusterBudget([key("a", 600)])
    budget.lease(0.0, 1, 1.0, worker=1)
    budget.report(0.0, [Report("a", "rate_limited", retry_after=2.0)], worker=1)
    assert budget.lease(0.1, 5, 1.0, worker=2) == []
    later = budget.lease(2.0, 5, 1.0, worker=2)
    assert later and later[0].at >= 2.0


def test_a_dead_key_gets_no_more_slots() -> None:
    budget = ClusterBudget([key("a", math.inf), key("b", math.inf)])
    budget.lease(0.0, 1, 1.0)
    budget.report(0.0, [Report("a", "dead")])
    assert budget.alive == 1
    assert {s.key for s in budget.lease(0.0, 20, 1.0)} == {"b"}


def test_tokens_per_minute_are_paced_cluster_wide() -> None:
    budget = ClusterBudget([key("a", math.inf, tpm=60_000)])  # 1000 tokens/s
    got = []
    now = 0.0
    while now < 5.0:
        for w in range(3):
            got += budget.lease(now, 10, 100.0, worker=w)
        now += 0.05
    # 100-token slots at 1000 tokens/s: about ten a second, however many workers ask.
    got = [s for s in got if s.at < 5.0]  # slots may reach past the loop by the horizon
    assert 45 <= len(got) <= 50


def test_an_undeclared_key_grows_until_a_429_then_backs_off() -> None:
    budget = ClusterBudget([key("a", None)])
    early = len(budget.lease(0.0, 1000, 1.0))
    got = drain(budget, 3.0, workers=1)
    assert len(got) > early
    (stats,) = budget.stats()
    rpm_before = stats[6]
    budget.report(1003.0, [Report("a", "rate_limited")])
    (after,) = budget.stats()
    assert rpm_before is not None and after[6] is not None and after[6] < rpm_before


def test_a_limit_the_headers_state_paces_the_key_for_every_worker() -> None:
    # Undeclared: discovery would start at 600 rpm and grow. One worker's answer states
    # 120 rpm: from then on every worker's slots on the key are half a second apart.
    budget = ClusterBudget([key("a", None)])
    budget.lease(0.0, 1, 10.0, worker=0)
    budget.report(0.1, [Report("a", "ok", limits=(120.0, None))], worker=0)
    got = drain(budget, 10.0)
    times = sorted(at for _, _, at in got)
    assert 18 <= len(times) <= 21  # 2 a second for 10 s, never the thousands discovery grows to
    # at most the stated limit in any one-second window, whichever worker asked
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 2
    (stats,) = budget.stats()
    assert stats.rpm == 120.0 and not stats.discovering
    # A 429 no longer runs discovery's cut: the stated limit stands, the key only waits.
    budget.report(1011.0, [Report("a", "rate_limited", retry_after=2.0)], worker=1)
    (after,) = budget.stats()
    assert after[6] == 120.0
    assert (
        min(s.at for s in budget.lease(1011.0, 4, 10.0, worker=2) or [Slot("a", 1e9, 0)]) >= 1013.0
    )


def test_a_stated_limit_above_the_declared_one_does_not_raise_it() -> None:
    budget = ClusterBudget([key("a", 60.0, tpm=1000.0)])
    budget.report(0.0, [Report("a", "unused", limits=(600.0, 5000.0))])
    (stats,) = budget.stats()
    assert stats.rpm == 60.0
    budget.report(0.0, [Report("a", "unused", limits=(30.0, 500.0))])
    (stats,) = budget.stats()
    assert stats.rpm == 30.0


def test_a_budget_the_headers_say_is_spent_holds_every_worker_back() -> None:
    # Unpaced (rpm = inf, as a user's own engine): nothing to push back but the key itself.
    budget = ClusterBudget([key("a", math.inf)])
    assert budget.lease(100.0, 1, 10.0, worker=0)[0].at == 100.0
    budget.report(100.0, [Report("a", "ok", spent=(3.0, None))], worker=0)
    slots = budget.lease(100.0, 4, 10.0, worker=1) + budget.lease(102.9, 4, 10.0, worker=2)
    assert slots and min(s.at for s in slots) >= 103.0  # held until the reset, whoever asks
    assert [s.at for s in budget.lease(103.0, 2, 10.0, worker=1)] == [103.0, 103.0]
    # Paced under a known limit, a spent budget comes back a request at a time.
    paced = ClusterBudget([key("b", 60.0)])
    first = paced.lease(200.0, 1, 10.0)[0]
    paced.report(200.0, [Report("b", "ok", spent=(30.0, None))])
    nxt = paced.lease(200.0, 1, 10.0) or paced.lease(201.1, 1, 10.0)
    assert first.at == 200.0 and nxt and nxt[0].at < 202.0  # not 30 s


async def test_a_workers_pool_reports_stated_limits_once_and_a_spent_budget_at_once() -> None:
    sent: list[list[Report]] = []  # what reached the coordinator, call by call
    handed = [Slot("a", 0.0, 10.0), Slot("a", 0.0, 10.0), Slot("b", 0.0, 10.0)]

    async def lease(n: int, tokens: float, reports: list[Report]) -> tuple[list[Slot], int]:
        sent.append(reports)
        out = handed[:]  # the whole slice at once, as a coordinator with room gives it
        handed.clear()
        return out, 2

    async def report(reports: list[Report]) -> None:
        sent.append(reports)

    budgets = {"a": key("a", None), "b": key("b", None)}
    pool = RemotePool(lease, report, budgets, slice_size=3)
    first = await pool.acquire(10, 4)
    stated = RateInfo(limit_requests=120.0, remaining_requests=50, reset_requests_s=1.0)
    await pool.release_ok(first, Usage(10, 4), stated)
    await pool.release_ok(first, Usage(10, 4), stated)  # the same limit again: not news
    assert len(sent) == 1  # both wait for the next call to the coordinator
    spent = RateInfo(limit_requests=120.0, remaining_requests=0, reset_requests_s=2.5)
    await pool.release_ok(first, Usage(10, 4), spent)
    urgent = sent[-1]
    assert urgent[0].spent == (2.5, None)
    # The other slot on "a", booked before the budget ran out, went back unused; "b" stays.
    assert [(r.key, r.outcome) for r in urgent[1:2]] == [("a", "unused")]
    assert [r.limits for r in urgent if r.outcome == "ok"] == [None, (120.0, None), None]
    assert (await pool.acquire(10, 4)).key == "b"
