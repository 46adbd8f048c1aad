"""`--max-cost` on Ray: the driver, which counts the spend, holds the cap for every worker.

Three workers share one key; each row costs about two cents at the prices given, so a cap of
a few dimes stops the run after a few rows. Without a cap held in one place, three workers
with batches of 64 rows each would spend many times it before the first answer came back.
The simulator's ledger says what was paid for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray")

import squall
from squall.config import EndpointConfig, KeyConfig, Price, RunConfig
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, expected_answer
from squall.testing import read_ledger_file, start_simulator_process, stop_process

pytestmark = [pytest.mark.ray, pytest.mark.timeout(150)]

KEY = "sk-ray-KEYCOST0000000000000007"
ROWS = 200
CAP = 0.3


def _config(url: str, ray_address: str, max_cost: float | None) -> RunConfig:
    return RunConfig(
        model="sim-model",
        endpoints=(
            EndpointConfig(name="sim", base_url=url, keys=(KeyConfig(key=ApiKey(KEY), rpm=6000),)),
        ),
        # USD per million tokens: a thousandth of a dollar a token, a couple of cents a row.
        prices={"sim-model": Price(input=1000.0, output=1000.0)},
        max_tokens=4,
        max_cost=max_cost,
        progress="off",
        ray=ray_address,
        workers=3,
    )


def test_max_cost_on_ray_stops_before_the_cap_and_the_rerun_pays_nothing_twice(
    ray_address: str, tmp_path: Path
) -> None:
    ledger_path = tmp_path / "ledger.jsonl"
    proc, url = start_simulator_process(
        SimConfig(keys=(SimKey(key=KEY),), latency_s=0.05), ledger_file=ledger_path
    )
    prompts = [f"ray cost row {i}: what is {i} + 3?" for i in range(ROWS)]
    out = tmp_path / "out.jsonl"
    try:
        first = squall.run(prompts, output=out, config=_config(url, ray_address, CAP))
        served_first = [e for e in read_ledger_file(ledger_path) if e.served]
        second = squall.run(prompts, output=out, config=_config(url, ray_address, None))
    finally:
        stop_process(proc)

    s = first.summary
    print(f"\nray max-cost: {s.done}/{s.total} done at ${s.cost:.4f} of ${CAP}: {s.reason}")
    assert first.exit_code == 1 and s.status == "stopped", s
    assert s.reason is not None and "cost cap" in s.reason
    assert s.cost is not None and 0 < s.cost <= CAP
    assert 0 < s.done < ROWS and s.failed == 0
    # Every request the provider answered is journaled: none was paid for and lost.
    assert len(served_first) == s.done

    assert second.exit_code == 0, second.summary
    assert [r["response"] for r in second.rows()] == [expected_answer(p) for p in prompts]
    served = [e.prompt_sha256 for e in read_ledger_file(ledger_path) if e.served]
    assert len(served) == len(set(served)) == ROWS  # each row paid for once, over both runs
