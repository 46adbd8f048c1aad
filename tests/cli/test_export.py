"""`squall export`: the output from a journal alone, sending nothing (after a kill -9, say)."""

from __future__ import annotations

import signal
from pathlib import Path

from cli_support import (
    KEY1,
    SimFactory,
    arith_rows,
    read_jsonl,
    run_squall,
    start_squall,
    wait_until,
    write_config,
    write_jsonl,
)

from squall.journal import Journal
from squall.records import RowState
from squall.simulator import SimConfig, SimKey, expected_answer

SLOW = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.05)


def test_export_after_kill_9_writes_every_row_and_what_was_paid_for(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SLOW)
    rows = arith_rows(400)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url, endpoint={"max_concurrency": 4})
    proc = start_squall(
        "run",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "-c",
        "squall.toml",
        cwd=tmp_path,
        log=tmp_path / "run.log",
    )
    assert wait_until(lambda: len(sim.served()) >= 40 or proc.poll() is not None, 60)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert not (tmp_path / "out.jsonl").exists()
    served = len(sim.served())

    # The account of the killed run says how to get what was paid for.
    status = run_squall("status", "out.jsonl.squall.sqlite", cwd=tmp_path)
    assert "interrupted" in status.stdout
    assert "squall export out.jsonl.squall.sqlite -o FILE" in " ".join(status.stdout.split())

    res = run_squall("export", "out.jsonl.squall.sqlite", "-o", "paid.jsonl", cwd=tmp_path)

    assert res.returncode == 0, res.stderr
    out = read_jsonl(tmp_path / "paid.jsonl")
    assert [r["id"] for r in out] == [r["id"] for r in rows]  # every row, in input order
    with Journal.open(tmp_path / "out.jsonl.squall.sqlite", read_only=True) as jr:
        done = {r.index for r in jr.iter_results() if r.state is RowState.DONE}
    assert 0 < len(done) < len(rows)
    for i, r in enumerate(out):
        if i in done:
            assert r["response"] == expected_answer(rows[i]["prompt"])
        else:
            assert r["response"] is None
    assert f"{len(done)} answered" in res.stderr
    assert len(sim.served()) == served  # nothing was sent


def test_export_of_a_missing_journal_says_so(tmp_path: Path) -> None:
    res = run_squall("export", "nope.sqlite", "-o", "x.jsonl", cwd=tmp_path)
    assert res.returncode == 2
    assert "nope.sqlite" in res.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_rerun_of_a_finished_run_says_it_is_already_complete(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1),)))
    write_jsonl(tmp_path / "in.jsonl", arith_rows(12))
    write_config(tmp_path / "squall.toml", sim.url)
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", "--progress", "plain")
    assert run_squall(*args, cwd=tmp_path).returncode == 0

    again = run_squall(*args, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert "already complete: all 12 rows were done before" in again.stderr
    assert "--restart" in again.stderr


def test_a_resumed_run_says_so_at_the_start(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.002))
    rows = arith_rows(20)
    write_jsonl(tmp_path / "in.jsonl", rows[:8])
    write_config(tmp_path / "squall.toml", sim.url)
    # Eight rows done, then the input grows to twenty: the rerun resumes with 12 to go.
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", "--progress", "plain")
    assert run_squall(*args, cwd=tmp_path).returncode == 0
    write_jsonl(tmp_path / "in.jsonl", rows)

    again = run_squall(*args, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert "resuming: 8 done, 12 to go" in again.stderr
