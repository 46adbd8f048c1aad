"""`squall run --api`: the request kind chosen on the command line, end to end."""

from __future__ import annotations

from pathlib import Path

from cli_support import KEY1, SimFactory, arith_rows, read_jsonl, run_squall, write_jsonl

from squall.records import OUTPUT_FIELDS
from squall.simulator import SimConfig, SimKey, expected_answer

FAST = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.002)


def test_run_with_api_completions_writes_the_choice_text(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(8)
    write_jsonl(tmp_path / "p.jsonl", rows)
    res = run_squall(
        "run", "p.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--key-env", "K1",
        "--model", "sim-model", "--api", "completions", "--rpm", "inf", "--progress", "off",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["response"] for r in out] == [expected_answer(r["prompt"]) for r in rows]
    assert list(out[0]) == [*rows[0], *OUTPUT_FIELDS]


def test_run_with_an_unknown_api_is_refused(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    write_jsonl(tmp_path / "p.jsonl", arith_rows(2))
    res = run_squall(
        "run", "p.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--key-env", "K1",
        "--model", "m", "--api", "moderations", "--progress", "off",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode != 0
    assert "--api 'moderations'" in res.stderr and "completions" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()
