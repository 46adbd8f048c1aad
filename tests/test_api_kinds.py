"""The `api` setting from Python: completions and embeddings runs against the simulator.

The simulator answers a completions body only on /v1/completions and a chat body only on
/v1/chat/completions (each route refuses the other's body with 400), so a row answered 200
was sent to the route of its kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import squall
from squall.operations import COMPLETIONS, operation
from squall.prompts import settings_fingerprint
from squall.records import OUTPUT_FIELDS
from squall.redact import ApiKey
from squall.runner import targets
from squall.simulator import (
    SimConfig,
    SimKey,
    Simulator,
    expected_answer,
    expected_embedding,
    prompt_digest,
)

KEY = "sk-kinds-TESTKEY00001111cafe"
SimulatorFactory = Callable[..., Simulator]


def endpoint(sim: Simulator, **settings: object) -> squall.EndpointConfig:
    return squall.EndpointConfig(
        name="sim",
        base_url=sim.base_url,
        keys=(squall.KeyConfig(key=ApiKey(KEY)),),
        rpm=math.inf,
        **settings,  # type: ignore[arg-type]
    )


def config_for(sim: Simulator, **settings: object) -> squall.RunConfig:
    """Return a RunConfig with one unlimited endpoint at `sim`, `settings` on top."""
    return squall.RunConfig(
        model="sim-model", endpoints=(endpoint(sim),), progress="off"
    ).model_copy(update=settings)


@pytest.fixture
def sim(simulator: SimulatorFactory) -> Simulator:
    return simulator(SimConfig(keys=(SimKey(key=KEY),)))


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_completions_run_sends_prompt_and_writes_choice_text(
    tmp_path: Path, sim: Simulator
) -> None:
    prompts = [f"what is {i} x 3 + 1?" for i in range(6)] + ["say something"]
    out = tmp_path / "out.jsonl"
    res = squall.run(prompts, output=out, config=config_for(sim), api="completions")

    assert res.exit_code == 0 and res.summary.done == len(prompts)
    rows = read_jsonl(out)
    assert [r["response"] for r in rows] == [expected_answer(p) for p in prompts]
    assert list(rows[0]) == ["prompt", *OUTPUT_FIELDS]
    assert [r["response"] for r in res.rows()] == [expected_answer(p) for p in prompts]
    ledger = sim.ledger()
    assert len(ledger) == len(prompts)
    assert all(e.status == 200 and e.fault == "" and e.inputs == 1 for e in ledger)
    assert {e.prompt_sha256 for e in ledger} == {prompt_digest(p) for p in prompts}


def test_completions_targets_post_to_the_completions_path(sim: Simulator) -> None:
    (target,) = targets(config_for(sim), operation("completions")).values()
    assert target.url == sim.base_url + "/completions"
    assert target.url.endswith("/v1/completions")


def test_completions_template_is_sent_as_the_prompt(tmp_path: Path, sim: Simulator) -> None:
    df = pd.DataFrame({"expression": ["1 + 2", "3 x 4"]})
    res = squall.run(
        df, output=tmp_path / "o.csv", config=config_for(sim, api="completions"),
        template="计算 {expression} 的结果",
    )  # fmt: skip
    assert [r["response"] for r in res.rows()] == ["3", "12"]


def test_completions_logprobs_land_in_an_output_column(tmp_path: Path, sim: Simulator) -> None:
    prompts = ["what is 2 + 3?", "what is 7 x 6?"]
    out = tmp_path / "out.jsonl"
    res = squall.run(
        prompts, output=out, config=config_for(sim), api="completions", params={"logprobs": 1}
    )
    assert res.exit_code == 0
    rows = read_jsonl(out)
    assert [r["response"] for r in rows] == ["5", "42"]
    assert list(rows[0]) == ["prompt", *OUTPUT_FIELDS, "logprobs"]
    first = rows[0]["logprobs"]
    assert isinstance(first, dict) and first["tokens"] == ["5"]
    assert [r["logprobs"] for r in res.rows()] == [r["logprobs"] for r in rows]


def test_completions_n_above_one_lands_every_choice(tmp_path: Path, sim: Simulator) -> None:
    out = tmp_path / "out.parquet"
    squall.run(["what is 4 + 4?"], output=out, config=config_for(sim, api="completions"),
               params={"n": 2})  # fmt: skip
    df = pd.read_parquet(out)
    assert list(df.columns) == ["prompt", *OUTPUT_FIELDS, "choices"]
    # Parquet holds a nested value as its JSON text (as for any list or object column).
    assert json.loads(df["choices"][0]) == ["8", "8"]


def test_completions_refuse_a_system_prompt(sim: Simulator) -> None:
    with pytest.raises(squall.ConfigError, match="no system prompt"):
        squall.run(["hi"], config=config_for(sim), api="completions", system="be terse")
    assert sim.ledger() == []


def test_batch_lines_with_completions_url_run_unchanged(tmp_path: Path, sim: Simulator) -> None:
    prompts = ["what is 9 + 9?", "what is 2 x 8?", "hello there"]
    lines: list[dict[str, object]] = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "sim-model", "prompt": p},
        }
        for i, p in enumerate(prompts)
    ]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    out = tmp_path / "out.jsonl"
    # The lines' url decides: the run's api (chat by default) does not apply to them.
    res = squall.run(src, output=out, config=config_for(sim))
    assert res.exit_code == 0
    got = read_jsonl(out)
    assert [g["custom_id"] for g in got] == ["r0", "r1", "r2"]
    for g, p in zip(got, prompts, strict=True):
        response = g["response"]
        assert isinstance(response, dict) and response["status_code"] == 200
        assert response["body"]["object"] == "text_completion"
        assert response["body"]["choices"][0]["text"] == expected_answer(p)
    assert len(sim.ledger()) == 3


def test_a_batch_line_with_another_url_than_the_first_is_refused(
    tmp_path: Path, sim: Simulator
) -> None:
    lines: list[dict[str, object]] = [
        {"custom_id": "a", "url": "/v1/completions", "body": {"model": "m", "prompt": "hi"}},
        {
            "custom_id": "b",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        },
    ]
    src = write_jsonl(tmp_path / "batch.jsonl", lines)
    with pytest.raises(squall.InputError) as info:
        squall.run(src, output=tmp_path / "out.jsonl", config=config_for(sim))
    assert (info.value.line, info.value.field) == (2, "url")
    assert "/v1/completions" in str(info.value)
    assert sim.ledger() == []


def test_rerun_with_another_api_is_a_settings_change(tmp_path: Path, sim: Simulator) -> None:
    prompts = [f"what is {i} + 1?" for i in range(4)]
    out = tmp_path / "out.jsonl"
    squall.run(prompts, output=out, config=config_for(sim))
    served = sim.served_count()
    with pytest.raises(squall.InputChangedError, match=r'api: "<unset>" -> "completions"'):
        squall.run(prompts, output=out, config=config_for(sim), api="completions")
    assert sim.served_count() == served
    again = squall.run(prompts, output=out, config=config_for(sim), api="completions", restart=True)
    assert again.summary.complete and sim.served_count() == served + len(prompts)


def test_chat_settings_fingerprint_is_what_it_was_before_the_api_setting() -> None:
    given: dict[str, Any] = {
        "template": None,
        "system": None,
        "max_tokens": 5,
        "temperature": None,
        "params": {},
        "model": "m",
    }
    before = settings_fingerprint(**given)
    assert "api" not in before.settings
    assert settings_fingerprint(**given, api="chat") == before
    other = settings_fingerprint(**given, api="completions")
    assert other.digest != before.digest and other.settings["api"] == "completions"


def test_an_endpoint_api_must_be_the_runs(tmp_path: Path, sim: Simulator) -> None:
    cfg = config_for(sim, api="completions", endpoints=(endpoint(sim, api="chat"),))
    with pytest.raises(squall.ConfigError, match="mixed kinds in one run are not supported yet"):
        squall.run(["hi"], output=tmp_path / "o.jsonl", config=cfg)
    assert sim.ledger() == []
    same = config_for(sim, api="completions", endpoints=(endpoint(sim, api="completions"),))
    res = squall.run(["what is 1 + 1?"], output=tmp_path / "o.jsonl", config=same)
    assert [r["response"] for r in res.rows()] == ["2"]


def test_an_endpoint_api_in_a_config_file_sets_nothing_else(tmp_path: Path, sim: Simulator) -> None:
    toml = tmp_path / "squall.toml"
    toml.write_text(
        f'model = "sim-model"\napi = "completions"\nprogress = "off"\n'
        f'[[endpoints]]\nname = "sim"\nbase_url = "{sim.base_url}"\nkeys = ["{KEY}"]\n'
        'rpm = inf\napi = "completions"\n',
        encoding="utf-8",
    )
    res = squall.run(["what is 3 x 3?"], output=tmp_path / "o.jsonl", config=toml)
    assert [r["response"] for r in res.rows()] == ["9"]


def test_embeddings_run_packs_the_rows_into_one_request_and_writes_each_vector(
    tmp_path: Path, sim: Simulator
) -> None:
    texts = ["the cat", "a dog", "什么"]
    out = tmp_path / "out.jsonl"
    res = squall.run(
        texts, output=out, config=config_for(sim), api="embeddings", params={"dimensions": 8}
    )
    assert res.exit_code == 0
    rows = read_jsonl(out)
    assert [r["embedding"] for r in rows] == [expected_embedding(t, 8) for t in texts]
    assert list(rows[0]) == ["prompt", *operation("embeddings").output_columns]
    assert [r["embedding"] for r in res.rows()] == [r["embedding"] for r in rows]
    ledger = sim.ledger()
    assert [(e.inputs, e.status) for e in ledger] == [(len(texts), 200)]


def test_completions_with_params_is_the_registrys_when_nothing_extra_is_asked() -> None:
    assert COMPLETIONS.with_params({"echo": True}) is COMPLETIONS


def test_export_of_an_embeddings_journal_writes_the_embedding_column(
    tmp_path: Path, sim: Simulator
) -> None:
    from squall.passes import export

    res = squall.run(
        ["one", "two"], output=tmp_path / "o.jsonl", config=config_for(sim, api="embeddings"),
        params={"dimensions": 4},
    )  # fmt: skip
    rows, done = export(res.journal, tmp_path / "again.jsonl")
    assert (rows, done) == (2, 2)
    got = read_jsonl(tmp_path / "again.jsonl")
    assert [r["embedding"] for r in got] == [expected_embedding(t, 4) for t in ("one", "two")]


def test_an_eval_refuses_an_embeddings_config(tmp_path: Path, sim: Simulator) -> None:
    from squall.evals.runner import evaluate_arithmetic

    with pytest.raises(squall.ConfigError, match="api is embeddings"):
        evaluate_arithmetic(
            ["m"], out_dir=tmp_path / "ev", config=config_for(sim, api="embeddings")
        )
    assert sim.ledger() == []


def test_embeddings_pack_200_rows_64_a_request_each_row_its_own_vector(
    tmp_path: Path, sim: Simulator
) -> None:
    texts = [f"text number {i} " + "word " * (i % 7) for i in range(200)]
    out = tmp_path / "out.jsonl"
    res = squall.run(
        texts,
        output=out,
        config=config_for(sim, api="embeddings", embeddings_max_inputs=64),
        params={"dimensions": 6},
    )
    assert res.exit_code == 0
    rows = read_jsonl(out)
    assert [r["embedding"] for r in rows] == [expected_embedding(t, 6) for t in texts]
    ledger = sim.ledger()
    assert sorted(e.inputs for e in ledger) == [8, 64, 64, 64]
    assert all(e.status == 200 for e in ledger)
    # The answer's usage is shared out to the rows: their tokens add up to what was billed.
    assert sum(int(str(r["prompt_tokens"])) for r in rows) == res.summary.prompt_tokens


def test_embeddings_pack_by_estimated_tokens(tmp_path: Path, sim: Simulator) -> None:
    texts = ["x" * 400 for _ in range(10)]  # about 100 estimated tokens each
    res = squall.run(
        texts,
        output=tmp_path / "out.jsonl",
        config=config_for(sim, api="embeddings", embeddings_max_tokens=350),
        params={"dimensions": 4},
    )
    assert res.exit_code == 0
    assert sorted(e.inputs for e in sim.ledger()) == [1, 3, 3, 3]


def test_one_bad_embeddings_input_fails_its_row_alone(tmp_path: Path, sim: Simulator) -> None:
    texts = [f"row {i}" for i in range(16)]
    texts[11] = "row 11 SQUALL_BAD_REQUEST"
    out = tmp_path / "out.jsonl"
    res = squall.run(
        texts, output=out, config=config_for(sim, api="embeddings"), params={"dimensions": 4}
    )
    rows = read_jsonl(out)
    failed = [i for i, r in enumerate(rows) if r["error"] is not None]
    assert failed == [11]
    assert all(
        rows[i]["embedding"] == expected_embedding(t, 4) for i, t in enumerate(texts) if i != 11
    )
    assert (res.summary.done, res.summary.failed) == (15, 1)
    # 16 -> 8 -> 4 -> 2 -> 1, each with its good half: 1 + 2 log2(16) requests.
    assert len(sim.ledger()) == 9


def test_an_embeddings_pack_holds_no_more_tokens_than_a_key_may_use_a_minute(
    tmp_path: Path, sim: Simulator
) -> None:
    from squall.operations import packing
    from squall.plan import make_plan

    def pack_limits(**settings: object) -> tuple[int, int]:
        cfg = config_for(sim, api="embeddings", **settings)
        plan = make_plan(
            ["a"], cfg=cfg, output=None, journal=tmp_path / "j", input_format=None, dry_run=True
        )
        op = packing(plan.operation)
        assert op is not None
        return op.max_inputs, op.max_tokens

    assert pack_limits() == (512, 100_000)
    assert pack_limits(embeddings_max_inputs=64, embeddings_max_tokens=900) == (64, 900)
    limited = config_for(sim).endpoints[0].model_copy(update={"tpm": 5000.0})
    assert pack_limits(endpoints=(limited,)) == (512, 5000)
