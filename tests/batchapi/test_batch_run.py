"""`--batch-api` runs from Python against the simulator's Files and Batches API (real HTTP).

The simulator's ledger is the witness: each batch line it answered is an event naming its
batch and custom_id, and online requests are events of their own, so a test sees that every
row went through a batch, once, and none online.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import squall
from squall.journal import Journal
from squall.redact import ApiKey
from squall.simulator import BatchSettings, SimConfig, SimKey, Simulator, expected_answer

KEY = "sk-batchrun-TESTKEY0000aaaa1111"
KEY2 = "sk-batchrun-TESTKEY0000bbbb2222"
FAST = BatchSettings(validating_s=0.01, line_s=0.0005, finalizing_s=0.01, cancelling_s=0.01)
SimulatorFactory = Callable[..., Simulator]


def config_for(sim: Simulator, *keys: str, **settings: object) -> squall.RunConfig:
    endpoint = squall.EndpointConfig(
        name="sim",
        base_url=sim.base_url,
        keys=tuple(
            squall.KeyConfig(key=ApiKey(k), name=f"k{i + 1}") for i, k in enumerate(keys or (KEY,))
        ),
        rpm=math.inf,
    )
    return squall.RunConfig(
        model="sim-model",
        endpoints=(endpoint,),
        progress="off",
        batch_api=True,
        batch_poll_s=0.02,
        prices={"sim-model": squall.Price(input=1.0, output=2.0)},
    ).model_copy(update=settings)


def batch_lines(sim: Simulator) -> list[tuple[str, str]]:
    """(batch id, custom_id) of every batch line the simulator answered."""
    return [(e.batch_id, e.custom_id) for e in sim.ledger() if e.event == "batch_line"]


def online(sim: Simulator) -> int:
    return sum(1 for e in sim.ledger() if e.event == "request")


@pytest.fixture
def sim(simulator: SimulatorFactory) -> Simulator:
    return simulator(SimConfig(keys=(SimKey(key=KEY), SimKey(key=KEY2)), batches=FAST))


def test_batch_api_run_answers_every_row_through_batches_in_input_order(
    tmp_path: Path, sim: Simulator
) -> None:
    prompts = [f"what is {i} + {i}?" for i in range(120)]
    out = tmp_path / "out.jsonl"
    res = squall.run(prompts, output=out, config=config_for(sim, batch_max_requests=50))

    assert res.exit_code == 0, res.summary
    assert res.summary.done == 120 and res.summary.failed == 0
    assert [r["response"] for r in res.rows()] == [expected_answer(p) for p in prompts]
    lines = batch_lines(sim)
    assert len(lines) == 120 and online(sim) == 0
    assert sorted(Counter(b for b, _ in lines).values()) == [20, 50, 50]  # 50 + 50 + 20
    assert len({c for _, c in lines}) == 120  # no row in two batches
    with Journal.open(res.journal, read_only=True) as jr:
        recs = jr.batches.records()
    assert [r.rows for r in recs] == [50, 50, 20]
    assert all(r.status == "completed" and not r.live for r in recs)


def test_batches_spread_over_the_keys_and_cost_the_batch_share(
    tmp_path: Path, sim: Simulator
) -> None:
    prompts = [f"q{i}" for i in range(40)]
    cfg = config_for(sim, KEY, KEY2, batch_max_requests=10)
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=cfg)
    assert res.summary.done == 40
    keys = Counter(e.key for e in sim.ledger() if e.event == "batch_create")
    assert len(keys) == 2 and set(keys.values()) == {2}
    full = (res.summary.prompt_tokens * 1.0 + res.summary.completion_tokens * 2.0) / 1e6
    assert res.summary.cost == pytest.approx(full * 0.5)


def test_a_bad_line_fails_its_row_alone(tmp_path: Path, sim: Simulator) -> None:
    prompts = ["fine 1", "SQUALL_BAD_REQUEST here", "fine 2"]
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=config_for(sim))
    assert res.summary.done == 2 and res.summary.failed == 1
    rows = list(res.rows())
    assert rows[1]["response"] is None and rows[1]["error"]["type"] == "bad_request"
    assert rows[0]["response"] == expected_answer("fine 1")


def test_rerun_of_a_finished_batch_run_sends_nothing(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"p{i}" for i in range(10)]
    cfg = config_for(sim)
    squall.run(prompts, output=tmp_path / "o.jsonl", config=cfg)
    before = len(sim.ledger())
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=cfg)
    assert res.summary.done == 10 and len(sim.ledger()) == before


def test_a_failed_batch_leaves_its_rows_to_do_or_sends_them_online(
    tmp_path: Path, simulator: SimulatorFactory
) -> None:
    failing = BatchSettings(**{**FAST.__dict__, "p_fail": 1.0})
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),), batches=failing))
    prompts = [f"p{i}" for i in range(8)]
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=config_for(sim))
    assert res.summary.done == 0 and res.exit_code != 0
    assert "ended unfinished" in (res.summary.reason or "")
    res = squall.run(
        prompts, output=tmp_path / "o.jsonl", config=config_for(sim, batch_fallback="online")
    )
    assert res.summary.done == 8 and online(sim) == 8
    assert [r["response"] for r in res.rows()] == [expected_answer(p) for p in prompts]
