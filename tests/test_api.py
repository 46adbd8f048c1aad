"""`squall.run` and `squall.arun` from Python: lists, dicts, DataFrames; scripts and loops."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import squall
from squall.prompts import ROW_FINGERPRINT, fingerprint_v1
from squall.records import OUTPUT_FIELDS
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, Simulator, expected_answer

KEY = "sk-api-TESTKEY000011112222beef"
SimulatorFactory = Callable[..., Simulator]


def config_for(sim: Simulator, **settings: object) -> squall.RunConfig:
    """Return a RunConfig with one unlimited endpoint at `sim`."""
    endpoint = squall.EndpointConfig(
        name="sim", base_url=sim.base_url, keys=(squall.KeyConfig(key=ApiKey(KEY)),), rpm=math.inf
    )
    return squall.RunConfig(model="sim-model", endpoints=(endpoint,), progress="off").model_copy(
        update=settings
    )


@pytest.fixture
def sim(simulator: SimulatorFactory) -> Simulator:
    return simulator(SimConfig(keys=(SimKey(key=KEY),)))


def test_list_of_strings_to_parquet_in_order(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"what is {i} x {i} + 1?" for i in range(25)]
    res = squall.run(prompts, output=tmp_path / "out.parquet", config=config_for(sim))

    assert res.exit_code == 0
    s = res.summary
    assert (s.status, s.total, s.done, s.failed, s.pending) == ("completed", 25, 25, 0, 0)
    assert s.prompt_tokens > 0 and s.completion_tokens > 0 and s.wall_s is not None
    assert res.output == tmp_path / "out.parquet"
    assert res.journal == Path(f"{tmp_path / 'out.parquet'}.squall.sqlite")
    df = pd.read_parquet(tmp_path / "out.parquet")
    assert list(df.columns) == ["prompt", *OUTPUT_FIELDS]
    assert list(df["response"]) == [expected_answer(p) for p in prompts]
    assert [r["prompt"] for r in res.rows()] == prompts
    assert list(res.to_pandas()["response"]) == list(df["response"])
    # The account shows the key masked, never the key.
    assert KEY not in str(s) and KEY not in repr(res) and "sk-...beef" in str(s)


def test_dataframe_with_template_and_list_of_message_dicts(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no output: the journal goes under ./.squall/
    df = pd.DataFrame({"expression": ["1 + 2", "3 x 4", "10 - 7"], "n": [1, 2, 3]})
    res = squall.run(df, config=config_for(sim), template="计算 {expression} 的结果")
    assert res.exit_code == 0 and res.output is None
    assert res.journal.parent == Path(".squall")
    out = res.to_pandas()
    assert list(out["n"]) == [1, 2, 3]
    assert list(out["response"]) == ["3", "12", "3"]

    rows = [
        {
            "id": "a",
            "messages": [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "what is 2 + 2?"},
            ],
        },
        {"id": "b", "messages": [{"role": "user", "content": "what is 5 x 5?"}]},
    ]
    res2 = squall.run(rows, output=tmp_path / "m.jsonl", config=config_for(sim))
    assert [(r["id"], r["response"]) for r in res2.rows()] == [("a", "4"), ("b", "25")]


def test_rerun_resumes_and_changed_data_is_refused(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"what is {i} + 5?" for i in range(10)]
    out = tmp_path / "out.jsonl"
    squall.run(prompts, output=out, config=config_for(sim))
    served = sim.served_count()
    again = squall.run(prompts, output=out, config=config_for(sim))
    assert again.summary.complete and sim.served_count() == served

    changed = [*prompts[:4], "what is 99 + 1?", *prompts[5:]]
    with pytest.raises(squall.InputChangedError, match=r"line 5") as info:
        squall.run(changed, output=out, config=config_for(sim))
    assert "--restart" in str(info.value)
    assert sim.served_count() == served
    fresh = squall.run(changed, output=out, config=config_for(sim), restart=True)
    assert [r["response"] for r in fresh.rows()][4] == "100"


def test_journal_with_scheme_1_fingerprints_resumes_and_still_sees_changes(
    tmp_path: Path, sim: Simulator
) -> None:
    # A journal made before row fingerprint scheme 2 records no scheme and holds scheme 1
    # hashes: a rerun must compare with those, not refuse every row as changed.
    prompts = [f"what is {i} + 7?" for i in range(10)]
    out = tmp_path / "out.jsonl"
    first = squall.run(prompts, output=out, config=config_for(sim))
    with sqlite3.connect(first.journal) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'row_fingerprint'").fetchone() == (
            ROW_FINGERPRINT,
        )
        db.execute("DELETE FROM meta WHERE key = 'row_fingerprint'")
        db.executemany(
            "UPDATE rows SET fingerprint = ? WHERE idx = ?",
            [(fingerprint_v1({"prompt": p}), i) for i, p in enumerate(prompts)],
        )
    served = sim.served_count()
    again = squall.run(prompts, output=out, config=config_for(sim))
    assert again.summary.complete and sim.served_count() == served

    changed = [*prompts[:6], "what is 1 + 1?", *prompts[7:]]
    with pytest.raises(squall.InputChangedError, match=r"line 7"):
        squall.run(changed, output=out, config=config_for(sim))
    assert sim.served_count() == served


def test_bad_data_and_settings_raise_typed_errors(tmp_path: Path, sim: Simulator) -> None:
    with pytest.raises(squall.InputError, match=r"line 2.*prompt.*empty"):
        squall.run(["what is 1 + 1?", "  "], output=tmp_path / "o.jsonl", config=config_for(sim))
    # The signature is typed: a misspelt setting is caught by mypy, and by Python at the call.
    with pytest.raises(TypeError, match="modle"):
        squall.run(["hi"], output=tmp_path / "o.jsonl", config=config_for(sim), modle="x")  # type: ignore[call-arg]
    from squall.api import resolve_config

    with pytest.raises(squall.ConfigError, match="unknown setting"):
        resolve_config(None, {"modle": "x"})
    assert sim.ledger() == []


async def test_arun_inside_a_running_loop(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"what is {i} + {i}?" for i in range(12)]
    res = await squall.arun(prompts, output=tmp_path / "a.jsonl", config=config_for(sim))
    assert res.exit_code == 0
    assert [r["response"] for r in res.rows()] == [str(2 * i) for i in range(12)]


async def test_run_inside_a_running_loop_uses_a_worker_thread(
    tmp_path: Path, sim: Simulator
) -> None:
    # As in a Jupyter cell: a loop is running, and squall.run must neither nest nor fail.
    asyncio.get_running_loop()
    res = squall.run(["what is 6 x 7?"], output=tmp_path / "t.jsonl", config=config_for(sim))
    assert [r["response"] for r in res.rows()] == ["42"]
    assert not [t for t in threading.enumerate() if t.name == "squall-run"]


def test_overrides_on_a_runconfig_are_validated_like_the_files_settings() -> None:
    from squall.api import resolve_config
    from squall.config import RunConfig
    from squall.errors import ConfigError

    with pytest.raises(ConfigError, match="max_tokens"):
        resolve_config(RunConfig(model="m"), {"max_tokens": "lots"})
    assert resolve_config(RunConfig(model="m"), {"max_tokens": "12"}).max_tokens == 12


def test_max_cost_without_a_price_for_the_model_is_refused_before_sending(
    tmp_path: Path, sim: Simulator
) -> None:
    with pytest.raises(squall.ConfigError, match=r"(?s)cannot be held.*\[prices\.\"sim-model\"\]"):
        squall.run(["hi"], output=tmp_path / "o.jsonl", config=config_for(sim), max_cost=1.0)
    assert sim.ledger() == []
    assert not (tmp_path / "o.jsonl.squall.sqlite").exists()
