"""The simulator's ledger helper, its limit settings as data, and its table of request kinds."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from squall.errors import ConfigError
from squall.redact import mask_key
from squall.simulator import LedgerEntry, SimConfig, SimKey, Simulator, max_in_window
from squall.simulator.limits import SlidingWindow
from squall.simulator.routes import REQUEST_KINDS

KEY = "sk-test-ledger-aaaa1111"
OTHER = "sk-test-ledger-bbbb2222"


def entry(t: float, key: str = KEY, fault: str = "", status: int = 200) -> LedgerEntry:
    return LedgerEntry(t, mask_key(key), "m", "", status, status == 200 and not fault, fault)


# ------------------------------------------------------------------------------------------
# max_in_window


def test_max_in_window_finds_the_busiest_window_anywhere() -> None:
    times = [1.05, 0.0, 0.1, 0.5, 0.99, 1.0]  # any order
    entries = [entry(t) for t in times]
    # [0.1, 1.1) holds 0.1, 0.5, 0.99, 1.0, 1.05; [0, 1) only four.
    assert max_in_window(entries, KEY, 1.0) == 5
    assert max_in_window(entries, KEY, 0.5) == 3  # [0.99, 1.49)
    # Half-open: a window of 1 s starting at 0 does not hold what came at 1.0.
    assert max_in_window([entry(0.0), entry(1.0)], KEY, 1.0) == 1
    assert max_in_window([entry(0.0), entry(0.999)], KEY, 1.0) == 2
    assert max_in_window(entries, KEY, 0.01) == 1


def test_max_in_window_counts_what_passed_the_limits_of_that_key_only() -> None:
    entries = [
        entry(0.0),
        entry(0.1, fault="500", status=500),  # past the limits: counts
        entry(0.2, fault="429", status=429),  # a spontaneous 429 after the limits: counts
        entry(0.3, fault="limit", status=429),  # refused by the limit: does not
        entry(0.4, fault="concurrency", status=429),
        entry(0.5, fault="auth", status=401),
        entry(0.6, fault="bad_body", status=400),
        entry(0.7, OTHER),
    ]
    assert max_in_window(entries, KEY, 10.0) == 3
    assert max_in_window(entries, mask_key(KEY), 10.0) == 3  # the masked key works too
    assert max_in_window(entries, OTHER, 10.0) == 1
    assert max_in_window([], KEY, 1.0) == 0


# ------------------------------------------------------------------------------------------
# The sliding window on its own


def test_sliding_window_says_when_enough_has_left_it() -> None:
    w = SlidingWindow(per_minute=300, window_s=2.0)  # 10 per 2 s
    for t in (0.0, 0.5, 1.0):
        assert w.wait_s(3, t) == 0.0
        w.take(3, t)
    assert w.wait_s(1, 1.5) == 0.0
    assert w.wait_s(2, 1.5) == pytest.approx(0.5)  # the 3 taken at 0 leave at 2.0
    assert w.wait_s(4, 1.5) == pytest.approx(0.5)
    assert w.wait_s(5, 1.5) == pytest.approx(1.0)  # needs the 3 taken at 0.5 gone too
    assert w.wait_s(8, 1.5) == pytest.approx(1.5)
    assert w.wait_s(50, 1.5) == pytest.approx(1.5)  # over capacity: needs it empty
    assert w.wait_s(50, 3.0) == 0.0
    assert w.reset_s(3.0) == 0.0


def test_a_fractional_window_holds_at_least_one() -> None:
    w = SlidingWindow(per_minute=6, window_s=1.0)  # 0.1 a second: at least one passes
    assert w.wait_s(1, 0.0) == 0.0
    w.take(1, 0.0)
    assert w.wait_s(1, 0.5) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------
# Settings as data


def test_limit_mode_round_trips_through_json() -> None:
    cfg = SimConfig(
        keys=(
            SimKey(key=KEY, rpm=600, tpm=9000, limit_mode="sliding", window_s=0.25),
            SimKey(key=OTHER, rpm=60),
        )
    )
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["keys"][0]["limit_mode"] == "sliding" and data["keys"][0]["window_s"] == 0.25
    again = SimConfig.from_dict(data)
    assert again == cfg
    assert again.keys[1].limit_mode == "bucket" and again.keys[1].window_s == 1.0
    assert KEY not in repr(again.keys[0]) and "sliding" in repr(again.keys[0])


@pytest.mark.parametrize("key", [{"key": KEY, "limit_mode": "leaky"}, {"key": KEY, "window_s": 0}])
def test_bad_limit_settings_raise_config_error(key: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        SimConfig.from_dict({"keys": [key]})
    assert KEY not in str(info.value)


# ------------------------------------------------------------------------------------------
# Request kinds


async def test_only_the_paths_in_the_table_are_answered(simulator: Any) -> None:
    assert set(REQUEST_KINDS) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"}
    sim: Simulator = simulator()
    body = {"model": "m", "input": "hello"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.base_url + "/moderations", json=body) as r,
    ):
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "unknown_url"
