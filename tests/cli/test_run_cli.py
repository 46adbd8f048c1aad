"""`squall run` and `squall status` end to end: exit codes, formats, dry run, cost cap.

Each test runs the real command as a subprocess against a simulator process and reads the
files it wrote, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_support import (
    DEAD_KEY,
    KEY1,
    SimFactory,
    arith_rows,
    assert_complete_output,
    one_line,
    read_jsonl,
    run_squall,
    user_env,
    write_config,
    write_jsonl,
)

from squall.records import OUTPUT_FIELDS
from squall.redact import mask_key
from squall.simulator import SimConfig, SimKey, expected_answer, prompt_digest

FAST = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.005)


def status_json(cwd: Path, journal: Path) -> dict[str, Any]:
    """Return `squall status JOURNAL --json` as data."""
    res = run_squall("status", journal, "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def test_all_done_exits_0_with_env_file_and_plain_progress(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(40)
    write_jsonl(tmp_path / "prompts.jsonl", rows)
    # The key comes from .env through ${K1}; the model through ${MODEL:-default}.
    (tmp_path / ".env").write_text(f"K1={KEY1}\n", encoding="utf-8")
    write_config(tmp_path / "squall.toml", sim.url, model="${SIM_MODEL:-sim-model}")

    res = run_squall(
        "run",
        "prompts.jsonl",
        "-o",
        "results.jsonl",
        "-c",
        "squall.toml",
        cwd=tmp_path,
        env=user_env(),
    )

    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "results.jsonl")
    assert_complete_output(out, rows)
    assert list(out[0]) == ["id", "prompt", *OUTPUT_FIELDS]
    assert {r["endpoint"] for r in out} == {"sim"}
    assert all(r["attempts"] >= 1 and r["finish_reason"] == "stop" for r in out)
    assert {e.model for e in sim.ledger()} == {"sim-model"}
    # stderr is a pipe here: progress comes as plain lines, not a live display.
    assert "squall: 40/40 done" in res.stderr
    assert "\x1b[" not in res.stderr
    assert "completed" in res.stderr and "40 done" in res.stderr

    status = status_json(tmp_path, tmp_path / "results.jsonl.squall.sqlite")
    assert status["status"] == "completed"
    assert (status["total"], status["done"], status["failed"], status["pending"]) == (40, 40, 0, 0)
    text = run_squall("status", "results.jsonl.squall.sqlite", cwd=tmp_path)
    assert text.returncode == 0
    assert "completed" in text.stdout and "40 done" in text.stdout

    # Rerunning a finished run sends nothing and exits 0 again.
    before = len(sim.ledger())
    again = run_squall(
        "run",
        "prompts.jsonl",
        "-o",
        "results.jsonl",
        "-c",
        "squall.toml",
        cwd=tmp_path,
        env=user_env(),
    )
    assert again.returncode == 0, again.stderr
    assert len(sim.ledger()) == before
    assert_complete_output(read_jsonl(tmp_path / "results.jsonl"), rows)


def test_rows_failed_for_good_exit_1_with_reasons(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(12)
    for i in (3, 8):
        rows[i]["prompt"] += " SQUALL_BAD_REQUEST"
    write_jsonl(tmp_path / "in.jsonl", rows)

    res = run_squall(
        "run",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--base-url",
        sim.url,
        "--key-env",
        "K1",
        "--model",
        "sim-model",
        "--rpm",
        "inf",
        cwd=tmp_path,
    )

    assert res.returncode == 1, res.stderr
    err = one_line(res.stderr)
    assert "2 failed" in err and "bad_request" in err and "rows 4, 9" in err
    assert "--retry-failed" in err
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == [r["id"] for r in rows]
    for i, r in enumerate(out):
        if i in (3, 8):
            assert r["response"] is None
            assert r["error"]["type"] == "bad_request" and r["error"]["status"] == 400
            assert "SQUALL_BAD_REQUEST" in r["error"]["message"]
        else:
            assert r["error"] is None and r["response"] == expected_answer(rows[i]["prompt"])
    # A 400 is recorded, not retried.
    bad = {prompt_digest(rows[i]["prompt"]) for i in (3, 8)}
    assert sum(1 for e in sim.ledger() if e.prompt_sha256 in bad) == 2

    status = status_json(tmp_path, tmp_path / "out.jsonl.squall.sqlite")
    assert status["failed"] == 2 and status["failures"]["bad_request"]["rows"] == [4, 9]

    # A plain rerun leaves rows refused for good alone; --retry-failed sends them again.
    args: tuple[str, ...]
    args = ("run", "in.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--key-env", "K1")
    args += ("--model", "sim-model", "--rpm", "inf")
    assert run_squall(*args, cwd=tmp_path).returncode == 1
    assert len(sim.ledger()) == 12
    assert run_squall(*args, "--retry-failed", cwd=tmp_path).returncode == 1
    assert sorted(e.prompt_sha256 for e in sim.ledger()[12:]) == sorted(bad)


def test_no_usable_key_stops_cleanly_and_resumes_with_a_good_one(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1), SimKey(key=DEAD_KEY, dead=True))))
    rows = arith_rows(20)
    write_jsonl(tmp_path / "in.jsonl", rows)
    base = ("run", "in.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--model", "sim-model")
    env = user_env(K1=KEY1, KD=DEAD_KEY)

    res = run_squall(*base, "--key-env", "KD", cwd=tmp_path, env=env)

    assert res.returncode == 1, res.stderr
    err = one_line(res.stderr)
    assert "no usable key" in err and mask_key(DEAD_KEY) in err and "Resume with:" in err
    assert DEAD_KEY not in res.stderr + res.stdout
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 20  # the output is written all the same
    status = status_json(tmp_path, tmp_path / "out.jsonl.squall.sqlite")
    assert (status["status"], status["done"], status["failed"]) == ("stopped", 0, 0)

    good = run_squall(*base, "--key-env", "K1", cwd=tmp_path, env=env)
    assert good.returncode == 0, good.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "in.jsonl"], "--output"),  # -o missing
        (["run", "in.jsonl", "-o", "o.jsonl", "--no-such-flag"], "--no-such-flag"),
        (["run", "in.jsonl", "-o", "o.jsonl", "--progress", "loud"], "--progress"),
        (["run", "in.jsonl", "-o", "o.jsonl", "--model", "m"], "no endpoint"),
        (["run", "in.jsonl", "-o", "o.jsonl", "--base-url", "http://127.0.0.1:9/v1"], "no model"),
        (
            [
                "run",
                "in.jsonl",
                "-o",
                "o.jsonl",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
                "--key-env",
                "NOT_SET_ANYWHERE",
            ],
            "NOT_SET_ANYWHERE",
        ),
        (
            [
                "run",
                "in.jsonl",
                "-o",
                "o.xlsx",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
            ],
            "o.xlsx",
        ),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    write_jsonl(tmp_path / "in.jsonl", arith_rows(2))
    res = run_squall(*args, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert needle in one_line(res.stdout + res.stderr)
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "o.jsonl.squall.sqlite").exists()


def test_csv_in_csv_out_with_template(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    exprs = ["3 + 4", "5 x 6", "7 - 2", "10 + 2 x 3", "8 x 8"]
    pd.DataFrame({"id": range(len(exprs)), "expression": exprs}).to_csv(
        tmp_path / "in.csv", index=False
    )
    res = run_squall(
        "run",
        "in.csv",
        "-o",
        "out.csv",
        "--base-url",
        sim.url,
        "--key-env",
        "K1",
        "--model",
        "sim-model",
        "--rpm",
        "inf",
        "--template",
        "计算 {expression} 的结果",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    assert list(out.columns) == ["id", "expression", *OUTPUT_FIELDS]
    assert list(out["id"]) == [str(i) for i in range(len(exprs))]
    assert list(out["response"]) == [expected_answer(f"计算 {e} 的结果") for e in exprs]
    assert set(out["error"]) == {""}
    assert {e.prompt_sha256 for e in sim.ledger()} == {
        prompt_digest(f"计算 {e} 的结果") for e in exprs
    }


def test_parquet_in_parquet_out(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(30)
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    res = run_squall(
        "run",
        "in.parquet",
        "-o",
        "out.parquet",
        "--base-url",
        sim.url,
        "--key-env",
        "K1",
        "--model",
        "sim-model",
        "--rpm",
        "inf",
        "--max-tokens",
        "16",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["id", "prompt", *OUTPUT_FIELDS]
    assert list(out["id"]) == list(range(30))
    assert list(out["response"]) == [expected_answer(r["prompt"]) for r in rows]
    assert out["error"].isna().all()
    assert (out["prompt_tokens"] > 0).all() and (out["attempts"] >= 1).all()


def test_openai_batch_lines_in_batch_lines_out(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    lines = []
    for i in range(6):
        content = f"what is {i} + 100?" + (" SQUALL_BAD_REQUEST" if i == 4 else "")
        lines.append(
            {
                "custom_id": f"task-{i:03d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "batch-model",
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": 20,
                },
            }
        )
    write_jsonl(tmp_path / "batch.jsonl", lines)
    # No --model: batch lines name their own, as files for the Batch API do.
    res = run_squall(
        "run",
        "batch.jsonl",
        "-o",
        "batch_out.jsonl",
        "--base-url",
        sim.url,
        "--key-env",
        "K1",
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr  # line 5 is a bad request
    out = read_jsonl(tmp_path / "batch_out.jsonl")
    assert [o["custom_id"] for o in out] == [f"task-{i:03d}" for i in range(6)]
    for i, o in enumerate(out):
        assert set(o) == {"id", "custom_id", "response", "error"}
        assert o["id"].startswith("batch_req_")
        if i == 4:
            assert o["error"]["code"] == "bad_request"
            assert o["response"]["status_code"] == 400
            continue
        assert o["error"] is None
        assert o["response"]["status_code"] == 200
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "batch-model"
        assert body["choices"][0]["message"]["content"] == str(i + 100)
        assert body["usage"]["total_tokens"] > 0 and body["id"].startswith("chatcmpl-")
    assert {e.model for e in sim.ledger()} == {"batch-model"}


def test_dry_run_estimates_and_sends_nothing(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    write_jsonl(tmp_path / "in.jsonl", arith_rows(25))
    config = write_config(tmp_path / "squall.toml", sim.url, max_tokens=10)
    with config.open("a", encoding="utf-8") as f:
        f.write('[prices."sim-model"]\ninput = 100.0\noutput = 200.0\n')

    res = run_squall("run", "in.jsonl", "-o", "out.jsonl", "-c", config, "--dry-run", cwd=tmp_path)

    assert res.returncode == 0, res.stderr
    text = one_line(res.stdout + res.stderr)
    assert "dry-run" in text and "25 total" in text
    assert "250 out" in text  # 25 rows x max_tokens 10
    assert "$" in text and "line 1:" in text
    assert sim.ledger() == []
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.jsonl.squall.sqlite").exists()


def test_max_cost_stops_before_the_cap_and_resumes(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(40)
    write_jsonl(tmp_path / "in.jsonl", rows)
    # About $0.01 a row, so a $0.10 cap stops well before the 40 rows are done.
    config = write_config(tmp_path / "squall.toml", sim.url, max_tokens=4)
    with config.open("a", encoding="utf-8") as f:
        f.write('[prices."sim-model"]\ninput = 1000.0\noutput = 1000.0\n')
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    journal = tmp_path / "out.jsonl.squall.sqlite"

    res = run_squall(*args, "--max-cost", "0.1", cwd=tmp_path)

    assert res.returncode == 1, res.stderr
    err = one_line(res.stderr)
    assert "cost cap" in err and "Resume with:" in err
    first = status_json(tmp_path, journal)
    assert first["status"] == "stopped"
    assert 0 < first["done"] < 40
    assert first["cost"] <= 0.1
    assert len(sim.served()) == first["done"]

    # The cap is the whole run's: a resume under the same cap does not spend it again.
    again = run_squall(*args, "--max-cost", "0.1", cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert status_json(tmp_path, journal)["cost"] <= 0.1

    done = run_squall(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    assert len(sim.served()) == 40  # nothing answered before was asked for again


def test_status_of_a_missing_journal_exits_2(tmp_path: Path) -> None:
    res = run_squall("status", "nope.sqlite", cwd=tmp_path)
    assert res.returncode == 2
    assert "nope.sqlite" in res.stderr


def test_python_m_squall_and_console_script_agree(tmp_path: Path) -> None:
    res = run_squall("--help", cwd=tmp_path)
    assert res.returncode == 0
    assert "run" in res.stdout and "status" in res.stdout
    script = Path(sys.executable).parent / "squall"
    if script.exists():  # the console script, once squall is pip-installed
        out = subprocess.run(
            [str(script), "run", "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=user_env(),
            check=False,
        )
        assert out.returncode == 0 and "--max-cost" in out.stdout
