"""`--batch-api` runs from Python against the simulator's Files and Batches API (real HTTP).

The simulator's ledger is the witness: each batch line it answered is an event naming its
batch and custom_id, and online requests are events of their own, so a test sees that every
row went through a batch, once, and none online.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

import squall
from squall.journal import Journal
from squall.redact import ApiKey
from squall.simulator import (
    BatchSettings,
    SimConfig,
    SimKey,
    Simulator,
    expected_answer,
    expected_embedding,
)

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


def test_a_key_the_batch_api_refuses_leaves_rotation_and_its_rows_go_to_the_other(
    tmp_path: Path, simulator: SimulatorFactory
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),), batches=FAST))  # KEY2 unknown: 401
    prompts = [f"p{i}" for i in range(30)]
    cfg = config_for(sim, KEY, KEY2, batch_max_requests=10)
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=cfg)
    assert res.summary.done == 30, res.summary
    assert [r["response"] for r in res.rows()] == [expected_answer(p) for p in prompts]
    assert len({c for _, c in batch_lines(sim)}) == 30 == len(batch_lines(sim))
    with Journal.open(res.journal, read_only=True) as jr:
        recs = jr.batches.records()
    assert any(r.status == "refused" and r.label == "k2" for r in recs)
    assert all(not r.live for r in recs)


def test_a_refused_batch_run_frees_its_rows_for_the_next_run(
    tmp_path: Path, simulator: SimulatorFactory
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),), batches=FAST))
    prompts = [f"p{i}" for i in range(5)]
    out = tmp_path / "o.jsonl"
    with pytest.raises(squall.SquallError, match="key") as info:
        squall.run(prompts, output=out, config=config_for(sim, KEY2))
    assert KEY2 not in str(info.value)
    with Journal.open(out.with_name("o.jsonl.squall.sqlite"), read_only=True) as jr:
        assert jr.batches.held_rows() == 0
    res = squall.run(prompts, output=out, config=config_for(sim, KEY, batch_api=False))
    assert res.summary.done == 5 and online(sim) == 5


def test_an_expired_batch_has_its_unrun_rows_sent_again_in_the_next_pass(
    tmp_path: Path, simulator: SimulatorFactory
) -> None:
    # Lines take 20 ms each and a batch expires after 0.1 s: the first batch answers a few
    # rows, the next pass sends the rest again, until all are answered.
    slow = BatchSettings(**{**FAST.__dict__, "line_s": 0.02, "expire_after_s": 0.15})
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),), batches=slow))
    prompts = [f"p{i}" for i in range(12)]
    res = squall.run(prompts, output=tmp_path / "o.jsonl", config=config_for(sim))
    with Journal.open(res.journal, read_only=True) as jr:
        recs = jr.batches.records()
    assert recs[0].status == "expired"
    assert len(recs) >= 2
    answered = [c for _, c in batch_lines(sim)]
    assert len(answered) == len(set(answered))  # a row runs in one batch only
    done = res.summary.done
    assert done == len(answered) and done > 0
    got = [r["response"] for r in res.rows()]
    assert sum(g is not None for g in got) == done
    assert all(g in (None, expected_answer(p)) for g, p in zip(got, prompts, strict=True))


def test_embeddings_and_completions_go_through_batches_too(tmp_path: Path, sim: Simulator) -> None:
    texts = [f"text number {i}" for i in range(7)]
    res = squall.run(
        texts,
        output=tmp_path / "e.jsonl",
        config=config_for(sim),
        api="embeddings",
        params={"dimensions": 8},
    )
    assert res.summary.done == 7
    assert [r["embedding"] for r in res.rows()] == [expected_embedding(t, 8) for t in texts]
    res = squall.run(texts, output=tmp_path / "c.jsonl", config=config_for(sim), api="completions")
    assert [r["response"] for r in res.rows()] == [expected_answer(t) for t in texts]
    kinds = [e.kind for e in sim.ledger() if e.event == "batch_create"]
    assert kinds == ["/v1/embeddings", "/v1/completions"] and online(sim) == 0


def test_openai_batch_lines_run_unchanged_through_the_batch_api(
    tmp_path: Path, sim: Simulator
) -> None:
    src = tmp_path / "lines.jsonl"
    lines = [
        {
            "custom_id": f"mine-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "sim-model", "messages": [{"role": "user", "content": f"q{i}"}]},
        }
        for i in range(4)
    ]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    res = squall.run(str(src), output=out, config=config_for(sim))
    assert res.summary.done == 4
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["custom_id"] for g in got] == [f"mine-{i}" for i in range(4)]
    answers = [g["response"]["body"]["choices"][0]["message"]["content"] for g in got]
    assert answers == [expected_answer(f"q{i}") for i in range(4)]


def test_dry_run_and_max_cost_count_the_batch_share(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"p{i}" for i in range(20)]
    online_cost = squall.run(
        prompts, config=config_for(sim, batch_api=False, max_tokens=100), dry_run=True
    ).summary.cost
    batch_cost = squall.run(
        prompts, config=config_for(sim, max_tokens=100), dry_run=True
    ).summary.cost
    assert online_cost and batch_cost == pytest.approx(online_cost * 0.5)
    assert batch_cost is not None
    # A cap that holds about one 10-row batch at batch prices (not at online prices).
    cap = batch_cost * 0.6
    res = squall.run(
        prompts,
        output=tmp_path / "o.jsonl",
        config=config_for(sim, max_tokens=100, batch_max_requests=10, max_cost=cap),
    )
    assert res.summary.done == 10 and "max cost" in (res.summary.reason or "")
