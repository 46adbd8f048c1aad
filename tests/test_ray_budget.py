"""The cluster's key budget (`squall.ray.budget`): pure arithmetic, no Ray needed.

It is what keeps N workers from each believing they own a key's whole limit: every slot
of a key comes from one schedule, whoever asks.
"""

from __future__ import annotations

import itertools
import math

from squall.ray.budget import ClusterBudget, KeyBudget, Report

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
