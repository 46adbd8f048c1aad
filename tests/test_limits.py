"""Pacing (GCRA), limit discovery and duration parsing: pure computation, fake time only."""

from __future__ import annotations

import itertools
import math

import pytest

from squall.limits import (
    SAFETY_MARGIN,
    WARMUP_S,
    ConcurrencyWindow,
    Discovery,
    Pace,
    parse_duration,
)

M = 1.0 + SAFETY_MARGIN  # how much longer than the limit's an interval is


def send_times(pace: Pace, n: int, *, start: float = 0.0, late: float = 0.0) -> list[float]:
    """Book `n` units as soon as the pace allows, each woken `late` seconds after its time."""
    now = start
    times: list[float] = []
    for _ in range(n):
        now = max(now, pace.ready_at(now))
        if times and now > times[-1]:
            now += late
        pace.take(now)
        times.append(now)
    return times


def most_in_window(times: list[float], window: float) -> int:
    """Return the most sends that fall within any half-open span of `window` seconds."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u < t + window - 1e-9))
    return best


# -- Pace ---------------------------------------------------------------------------------------


def test_pace_spaces_requests_evenly() -> None:
    pace = Pace(600)  # one every 0.1 s, paced one every 0.102 s
    times = send_times(pace, 10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.1 * M) for g in gaps)
    # 10 requests take 9 intervals: no early unit, no burst.
    assert times[-1] == pytest.approx(0.9 * M)


def test_declared_limit_paces_below_the_ceiling() -> None:
    pace = Pace(2400)  # a 40-per-second limit
    assert pace.per_minute == 2400  # the ceiling it is given
    assert pace.interval == pytest.approx(1 / 40 * M)  # the pace it keeps
    times = send_times(pace, 801, start=100.0)
    # 800 intervals at 98% of the limit, and the one warm-up pause of a cold start.
    assert times[-1] - times[0] == pytest.approx(800 / 40 * M + WARMUP_S, abs=0.03)
    assert (len(times) - 1) / (times[-1] - times[0]) <= 40 / M


def test_pace_never_bursts() -> None:
    pace = Pace(600)
    times = send_times(pace, 200)
    # A provider's one-second window holds 10 units; the pace never puts more there.
    assert most_in_window(times, 1.0) <= 10
    # And after a long idle spell it does not bank a burst either.
    idle = send_times(pace, 30, start=times[-1] + 60.0)
    assert most_in_window(idle, 1.0) <= 10
    assert idle[1] - idle[0] == pytest.approx(0.1 * M)


def test_pace_gives_no_early_unit_to_slow_keys() -> None:
    # 60 rpm: one per second; a provider window holds one, so an early one would be refused.
    pace = Pace(60)
    times = send_times(pace, 5, start=10.0)
    assert times == pytest.approx([10.0 + i * M for i in range(5)])
    pace = Pace(100)  # 1.67 per window: still below two
    times = send_times(pace, 4, late=0.01)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.6 * M + 0.01] * 3)


def test_pace_keeps_the_schedule_when_woken_slightly_late() -> None:
    pace = Pace(600)
    times = send_times(pace, 101, late=0.004)  # the loop wakes each send 4 ms late
    # Drifting would add 4 ms per send (0.4 s over 100 sends); keeping the schedule adds at
    # most one wake-up's lateness per window (the guard counts the sends as they left), and the
    # one warm-up pause of a cold start.
    assert times[-1] <= 100 * 0.1 * M + WARMUP_S + 10 * 0.004 + 0.01


@pytest.mark.parametrize("late", [0.0, 0.004, 0.011, 0.03])
@pytest.mark.parametrize("per_second", [2, 4, 20, 40, 8.33, 166.7])
def test_requests_evenly_spaced_within_any_one_second_window(
    per_second: float, late: float
) -> None:
    pace = Pace(per_second * 60)
    times = send_times(pace, 600, late=late)
    # Catching up on late wake-ups never crowds a provider's one-second sliding window.
    assert most_in_window(times, 1.0) <= math.ceil(per_second - 1e-9)
    if per_second == int(per_second):
        assert most_in_window(times, 1.0) <= per_second
    # Nor any span of the margin's length: the next request always leaves the jitter's room.
    cap = math.ceil(per_second - 1e-9)
    spans = [b - a for a, b in zip(times, times[cap:], strict=False)]
    assert min(spans) >= cap / per_second * M - 1e-9


def test_a_cold_start_counts_its_first_requests_as_sent_late_until_answered() -> None:
    # A cold key's first requests open connections: they may reach the provider together,
    # up to WARMUP_S late, so the guard counts them as sent then...
    cold = send_times(Pace(600), 12, start=10.0)
    assert cold[10] == pytest.approx(10.0 + WARMUP_S + 10 * 0.1 * M)
    # ... unless their answers come back sooner: they reached the provider by then.
    pace = Pace(600)
    times = []
    now = 10.0
    for _ in range(12):
        now = max(now, pace.ready_at(now))
        pace.take(now)
        pace.answered(now, now + 0.05)
        times.append(now)
    assert times[10] == pytest.approx(10.0 + 0.05 + 10 * 0.1 * M)


def test_pace_restarts_from_now_after_an_idle_spell() -> None:
    pace = Pace(600)
    send_times(pace, 10)
    assert pace.ready_at(100.0) == 100.0
    pace.take(100.0)
    assert pace.ready_at(100.0) == pytest.approx(100.0 + 0.1 * M)


def test_pace_unlimited_lets_everything_through() -> None:
    for rate in (None, math.inf):
        pace = Pace(rate)
        assert not pace.limited
        assert pace.per_minute is None
        for _ in range(1000):
            pace.take(5.0)
        assert pace.ready_at(5.0) == 5.0


def test_pace_set_rate_changes_spacing_and_keeps_booked_schedule() -> None:
    pace = Pace(600)
    pace.take(0.0)
    pace.take(0.0)  # booked to 0.2
    pace.set_rate(60)  # slow key now: no early unit
    assert pace.per_minute == 60
    assert pace.ready_at(0.0) == pytest.approx(0.2 * M)
    pace.take(0.2 * M)
    assert pace.ready_at(0.2) == pytest.approx(1.2 * M)
    pace.set_rate(None)
    assert pace.ready_at(0.2) == 0.2
    pace.set_rate(6000)
    assert pace.per_minute == 6000


def test_pace_adjust_corrects_a_booking_both_ways() -> None:
    tokens = Pace(6000)  # 100 tokens/s
    tokens.take(0.0, cost=100)  # booked one second of tokens
    assert tokens.ready_at(0.0) == pytest.approx(1.0 * M)
    tokens.adjust(-50)  # the answer used 50 fewer tokens than booked
    assert tokens.ready_at(0.0) == pytest.approx(0.5 * M)
    tokens.adjust(+150)
    assert tokens.ready_at(0.0) == pytest.approx(2.0 * M)


def test_pace_push_back_holds_the_schedule_but_never_pulls_it_forward() -> None:
    pace = Pace(600)
    pace.take(0.0)
    pace.push_back(5.0)
    assert pace.ready_at(1.0) >= 5.0 - 0.1
    pace.push_back(2.0)  # an earlier hold changes nothing
    assert pace.ready_at(1.0) >= 5.0 - 0.1
    slow = Pace(30)
    slow.push_back(7.0)
    assert slow.ready_at(0.0) == 7.0


# -- Discovery ----------------------------------------------------------------------------------


def test_discovery_grows_exponentially_until_first_429() -> None:
    d = Discovery(start_rpm=600)
    rates = []
    t = 1.0
    while t < 2.2:  # every send waited on the pace, so the key used all the rate it had
        new = d.on_sent(t, saturated=True)
        if new is not None:
            rates.append((t, new))
        t += 60.0 / d.rate
    # It doubles each busy step of four intervals (at least 50 ms), as TCP's slow start
    # doubles each round trip: 10 a second to over 5,000 a second in about a second.
    assert [r for _, r in rates] == [600 * 2**i for i in range(1, len(rates) + 1)]
    assert rates[-1][1] >= 300_000
    assert rates[4][0] - 1.0 == pytest.approx(0.4 + 0.2 + 0.1 + 0.05 + 0.05, abs=0.05)
    assert d.ceiling is None
    d.on_rate_limited(t, observed_rpm=50_000)
    assert d.ceiling == 50_000
    assert d.on_sent(t + 0.3, saturated=True) is None  # no more doubling after the first 429


def test_discovery_does_not_grow_while_the_key_is_idle() -> None:
    d = Discovery(start_rpm=600)
    for i in range(30):
        assert d.on_sent(1.0 + i * 0.5, saturated=False) is None
    assert d.rate == 600


def test_discovery_429_sets_ceiling_and_drops_to_80_percent() -> None:
    d = Discovery(start_rpm=1200)
    d.on_sent(1.0, saturated=True)
    rate = d.on_rate_limited(2.0, observed_rpm=1000)
    assert d.ceiling == 1000
    assert rate == pytest.approx(800)
    # A burst of 429s from the same overshoot counts once.
    assert d.on_rate_limited(2.2, observed_rpm=500) == pytest.approx(800)
    assert d.ceiling == 1000


def test_discovery_ceiling_without_an_observed_rate_uses_the_current_rate() -> None:
    d = Discovery(start_rpm=600)
    assert d.on_rate_limited(3.0, observed_rpm=0) == pytest.approx(480)
    assert d.ceiling == 600


def busy(d: Discovery, start: float, end: float) -> list[tuple[float, float]]:
    """Send at the rate `d` sets from `start` to `end`; return (time, new rate) of each change."""
    steps, t = [], start
    while t < end:
        new = d.on_sent(t, saturated=True)
        if new is not None:
            steps.append((t, new))
        t += 60.0 / d.rate
    return steps


def test_discovery_probes_back_to_the_last_rate_that_worked_in_seconds() -> None:
    d = Discovery(start_rpm=1000)
    d.on_rate_limited(1.0, observed_rpm=1000)
    assert d.rate == pytest.approx(800)
    assert d.on_sent(1.5, saturated=True) is None  # too soon after the 429
    steps = busy(d, 1.5, 8.0)
    # Each busy second closes half the gap to 95% of the ceiling: back in seconds.
    assert [r for _, r in steps] == pytest.approx([875, 912.5, 931.25, 941.25, 950])
    assert steps[-1][0] - 1.0 <= 7.5


def test_discovery_creeps_up_after_quiet_spells_and_follows_a_rising_limit() -> None:
    d = Discovery(start_rpm=1000)
    d.on_rate_limited(1.0, observed_rpm=1000)
    busy(d, 1.0, 8.0)  # back to 950
    steps = busy(d, 8.0, 60.0)
    # Then one step per ten busy seconds, each 1% of the ceiling, back up to it.
    assert [r for _, r in steps] == pytest.approx([960, 970, 980, 990, 1000], abs=1e-6)
    assert all(b - a >= 10 - 1e-9 for (a, _), (b, _) in itertools.pairwise(steps))
    # Past the old ceiling with no 429, each step doubles (capped at 25% of the rate): a
    # limit that rose (or was never a rate) is caught up with in minutes.
    later = [r for _, r in busy(d, 60.0, 250.0)]
    assert later[:4] == pytest.approx([1010, 1030, 1070, 1150], abs=1e-6)
    assert d.rate > 3000
    assert d.ceiling == pytest.approx(d.rate)
    # A 429 up there starts over from the new ceiling.
    d.on_rate_limited(250.0, observed_rpm=2000)
    assert d.rate == pytest.approx(1600)
    assert [r for _, r in busy(d, 250.0, 252.5)] == pytest.approx([1750, 1825])


def test_discovery_does_not_creep_while_the_key_is_underused() -> None:
    d = Discovery(start_rpm=1000)
    d.on_rate_limited(1.0, observed_rpm=1000)
    # One request a second against a rate of 800 a minute: nothing learnt about the limit.
    assert all(d.on_sent(float(t), saturated=True) is None for t in range(12, 400))
    assert d.rate == pytest.approx(800)


def test_discovery_later_429_lowers_the_ceiling() -> None:
    d = Discovery(start_rpm=1000)
    d.on_rate_limited(1.0, observed_rpm=1000)
    d.on_rate_limited(5.0, observed_rpm=700)
    assert d.ceiling == pytest.approx(700)
    assert d.rate == pytest.approx(560)


# -- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.02),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("6m0s", 360.0),
        ("1h2m", 3720.0),
        ("1h2m3.5s", 3723.5),
        ("2m30s", 150.0),
        ("0s", 0.0),
        ("7", 7.0),
        ("0.25", 0.25),
        (" 3s ", 3.0),
        ("1m500ms", 60.5),
    ],
)
def test_parse_duration_reads_openai_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "   ", "s", "ms", "abc", "5x", "1m2", "1.2.3s", "-", "-5", "inf", "nan", "1s-2s"]
)
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    assert parse_duration(text) is None


# -- ConcurrencyWindow --------------------------------------------------------------------------


def test_the_window_cuts_to_one_below_the_first_refused_level_and_ignores_its_round() -> None:
    w = ConcurrencyWindow(64)
    assert w.on_refused(1.0, 5, worded=False) and w.size == 4
    # The rest of that round left with more in flight than the window now allows.
    assert all(w.on_refused(1.0, n, worded=False) for n in range(6, 65))
    assert w.size == 4
    # One left at 1 in flight and was refused: no cap explains that.
    assert not w.on_refused(1.0, 1, worded=True)


def test_the_window_grows_only_while_kept_full_and_never_past_its_ceiling() -> None:
    w = ConcurrencyWindow(5)
    w.on_refused(0.0, 3, worded=False)
    assert w.size == 2
    w.on_sent(20.0, 1)  # not full: no growth, however long
    assert w.size == 2
    w.on_sent(20.0, 2)
    assert w.size == 3
    w.on_sent(25.0, 3)  # full, but only 5 s since the last step
    assert w.size == 3
    for t in range(30, 200, 10):
        w.on_sent(float(t), w.size)
    assert w.size == 5


def test_successes_at_a_level_overrule_a_plain_refusal_there_but_not_a_worded_one() -> None:
    w = ConcurrencyWindow(16)
    w.on_ok(6)
    assert not w.on_refused(0.0, 6, worded=False) and w.size == 16
    assert w.on_refused(0.0, 7, worded=False) and w.size == 6
    assert w.on_refused(1.0, 3, worded=True) and w.size == 2


def test_a_success_sent_before_a_cut_does_not_vouch_for_levels_above_the_window() -> None:
    # 64 raced to the server; the one sent 40th got in, the one sent 8th was refused.
    w = ConcurrencyWindow(64)
    assert w.on_refused(0.0, 8, worded=False) and w.size == 7
    w.on_ok(40)
    for t in (10.0, 20.0):
        w.on_sent(t, w.size)
    assert w.size == 9
    # The probe at 9 in flight is refused: the window explains it, the key need not cool.
    assert w.on_refused(21.0, 9, worded=False) and w.size == 8
