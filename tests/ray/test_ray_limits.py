"""Three Ray workers share three keys of uneven limits: no window over, the sum reached.

The simulator runs as its own process and enforces each key's limit as a sliding one-second
window (any second holds at most the limit); its ledger records every request, so the test
reads what the provider saw, not what squall says it did.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

import squall
from squall.config import EndpointConfig, KeyConfig, RunConfig
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, expected_answer, max_in_window
from squall.testing import read_ledger_file, start_simulator_process, stop_process

pytestmark = [pytest.mark.ray, pytest.mark.timeout(150)]

# requests per second each key allows; declared to squall as rpm = 60 x these
LIMITS = {
    "sk-ray-KEYFAST0000000000000001": 20,
    "sk-ray-KEYMID00000000000000002": 10,
    "sk-ray-KEYSLOW0000000000000003": 5,
}
ROWS = 600  # about 17 s at the 35 requests/s the keys allow together
WINDOW_S = 1.0


def test_three_workers_hold_every_key_under_its_limit_and_reach_the_sum(
    ray_address: str, tmp_path: Path
) -> None:
    sim_keys = tuple(
        SimKey(key=k, rpm=60.0 * rps, limit_mode="sliding", window_s=WINDOW_S)
        for k, rps in LIMITS.items()
    )
    ledger_path = tmp_path / "ledger.jsonl"
    proc, url = start_simulator_process(
        SimConfig(keys=sim_keys, latency_s=0.05, latency_jitter_s=0.02), ledger_file=ledger_path
    )
    prompts = [f"ray row {i}: what is {i} + {i % 7} x 3?" for i in range(ROWS)]
    config = RunConfig(
        model="sim-model",
        endpoints=(
            EndpointConfig(
                name="sim",
                base_url=url,
                keys=tuple(KeyConfig(key=ApiKey(k), rpm=60.0 * rps) for k, rps in LIMITS.items()),
            ),
        ),
        progress="off",
        ray=ray_address,
        workers=3,
    )
    try:
        result = squall.run(prompts, output=tmp_path / "out.jsonl", config=config)
    finally:
        stop_process(proc)

    assert result.exit_code == 0, result.summary
    rows = list(result.rows())
    assert len(rows) == ROWS
    for i, row in enumerate(rows):
        assert row["response"] == expected_answer(prompts[i]), f"row {i}"

    ledger = [e for e in read_ledger_file(ledger_path) if e.event == "request"]
    over = {k: max_in_window(ledger, k, WINDOW_S - 0.001) for k in LIMITS}
    refused = [e for e in ledger if e.fault == "limit" or e.status == 429]
    served = sorted(e.t for e in ledger if e.served)
    steady = served[9:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    total = sum(LIMITS.values())
    print(
        f"\nray limits: {len(ledger)} requests, {len(refused)} 429s, busiest windows "
        f"{over} (limits {list(LIMITS.values())}), steady rate {rate:.1f}/s = "
        f"{rate / total:.2f} of the sum {total}/s over {steady[-1] - steady[0]:.1f} s"
    )
    for key, rps in LIMITS.items():
        assert over[key] <= rps * WINDOW_S, (key, over[key], rps)
    assert len(refused) < 0.01 * len(ledger), len(refused)
    assert len(served) == ROWS  # each row paid once
    assert rate >= 0.9 * total, rate
