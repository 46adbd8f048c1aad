"""`squall.ray.process` on a real (local) Ray instance: a Dataset through squall's engine.

The same answers as a local run, row by row, and a rerun of the same pipeline sends nothing
(its finished batches were recorded). Skipped where Ray is not installed (`squall[ray]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import squall
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, Simulator, expected_answer

ray = pytest.importorskip("ray")
import squall.ray  # noqa: E402  # needs Ray, imported after the skip

KEY = "sk-raydata-TESTKEY0000111122"
SimulatorFactory = Callable[..., Simulator]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="squall")
    yield ray
    if started:
        ray.shutdown()


def config_for(sim: Simulator) -> squall.RunConfig:
    ep = squall.EndpointConfig(
        name="sim", base_url=sim.base_url, keys=(squall.KeyConfig(key=ApiKey(KEY)),), rpm=math.inf
    )
    return squall.RunConfig(model="sim-model", endpoints=(ep,), progress="off")


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_process_gives_a_local_runs_answers_and_a_rerun_sends_nothing(
    tmp_path: Path, simulator: SimulatorFactory, local_ray: Any
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),)))
    items: list[dict[str, Any]] = [
        {"id": i, "prompt": f"row {i}: what is {i} + {i % 7}?"} for i in range(10_000)
    ]
    local = squall.run(items, output=tmp_path / "local.jsonl", config=config_for(sim))
    want = {r["id"]: r["response"] for r in local.rows()}
    assert want == {it["id"]: expected_answer(it["prompt"]) for it in items}
    sent_locally = len(sim.ledger())

    ds = local_ray.data.from_items(items)
    cache = tmp_path / "cache"
    out = squall.ray.process(ds, config=config_for(sim), cache_dir=cache, workers=2)
    got = {r["id"]: r["response"] for r in out.take_all()}
    assert got == want
    assert len(sim.ledger()) - sent_locally == len(items)  # each row once

    again = squall.ray.process(ds, config=config_for(sim), cache_dir=cache, workers=2)
    assert {r["id"]: r["response"] for r in again.take_all()} == want
    assert len(sim.ledger()) - sent_locally == len(items)  # nothing sent again


def test_process_refuses_a_max_cost_it_could_not_hold() -> None:
    # Mapper actors spend in parallel with no one place counting: the cap is refused before
    # anything is read or sent (the dataset is never touched).
    cfg = squall.RunConfig(
        endpoints=(
            squall.EndpointConfig(
                name="sim",
                base_url="http://127.0.0.1:9/v1",
                keys=(squall.KeyConfig(key=ApiKey(KEY)),),
            ),
        ),
        model="sim-model",
        max_cost=1.0,
    )
    with pytest.raises(squall.ConfigError, match="squall run --ray --max-cost"):
        squall.ray.process(object(), config=cfg)
