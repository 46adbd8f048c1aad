"""Killing `squall run` (SIGKILL, Ctrl-C) and changing its input, then running it again.

The simulator runs as its own process and writes a ledger of every request it handled, with
the sha256 of each prompt, so a test can map every request back to its row and check that
nothing the journal had finished was asked for again.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_support import (
    KEY1,
    SimFactory,
    SimProcess,
    arith_rows,
    assert_complete_output,
    digests_to_rows,
    one_line,
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

# Slow enough that a kill lands with requests in flight, fast enough for a short test.
SLOW = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.04, latency_jitter_s=0.03, p_500=0.02)


def journal_states(path: Path) -> dict[int, RowState]:
    """Return each row's state as the journal holds it (read-only, as `squall status` reads)."""
    with Journal.open(path, read_only=True) as jr:
        return {r.index: r.state for r in jr.iter_results()}


def served_count(sim: SimProcess) -> int:
    return len(sim.served())


def kill_when_served(
    proc: subprocess.Popen[bytes], sim: SimProcess, at_least: int, sig: signal.Signals
) -> None:
    """Send `sig` to `proc` once the simulator has served `at_least` answers in all."""
    reached = wait_until(lambda: served_count(sim) >= at_least or proc.poll() is not None, 60)
    assert reached, f"the run never reached {at_least} served answers"
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(sig)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_and_repeats_nothing(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SLOW)
    rows = arith_rows(600)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url, endpoint={"rpm": 9000, "max_concurrency": 12})
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    journal = tmp_path / "out.jsonl.squall.sqlite"
    row_of = digests_to_rows(rows)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    kill_points = [rng.randint(40, 140), rng.randint(220, 320), rng.randint(380, 480)]

    # (time the next run started, rows DONE before it started)
    restarts: list[tuple[float, set[int]]] = []
    in_flight_total = 0
    for point in kill_points:
        proc = start_squall(*args, cwd=tmp_path, log=tmp_path / "runs.log")
        kill_when_served(proc, sim, point, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        states = journal_states(journal)
        done = {i for i, s in states.items() if s == RowState.DONE}
        in_flight = sum(1 for s in states.values() if s == RowState.SENT)
        in_flight_total += in_flight

        status = run_squall("status", journal, "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        account = json.loads(status.stdout)
        assert account["status"] == "interrupted", (seed, account)
        assert account["in_flight_at_crash"] == in_flight
        assert account["done"] == len(done)
        text = one_line(run_squall("status", journal, cwd=tmp_path).stdout)
        assert "interrupted" in text and f"with {in_flight} request(s) in flight" in text
        restarts.append((time.monotonic(), done))

    final = run_squall(*args, cwd=tmp_path, timeout=120)
    assert final.returncode == 0, final.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)

    ledger = sim.ledger()
    # No row the journal had finished before a kill was requested by a later run. An entry's
    # time is when the simulator received it: after a restart, only the new run can send.
    for entry in ledger:
        finished = set().union(*(done for t, done in restarts if t <= entry.t))
        assert row_of[entry.prompt_sha256] not in finished, (seed, entry)
    # Answers paid for twice came only from requests in flight at a kill.
    served = Counter(e.prompt_sha256 for e in ledger if e.served)
    assert set(served) == set(row_of)
    paid_twice = sum(n - 1 for n in served.values())
    assert paid_twice <= in_flight_total, (seed, paid_twice, in_flight_total)


def test_ctrl_c_lands_in_flight_writes_output_and_resumes(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    # Long enough (about 11 s) that a loaded machine cannot finish it before the checks.
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.3))
    rows = arith_rows(150)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url, endpoint={"rpm": 6000, "max_concurrency": 4})
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    journal = tmp_path / "out.jsonl.squall.sqlite"
    log = tmp_path / "run.log"

    proc = start_squall(*args, cwd=tmp_path, log=log)
    assert wait_until(lambda: len(sim.served()) >= 10 or proc.poll() is not None, 60)
    # While it runs, `squall status` reads the journal beside it and says so.
    live = run_squall("status", journal, "--json", cwd=tmp_path)
    assert live.returncode == 0, live.stderr
    assert json.loads(live.stdout)["status"] == "running"
    kill_when_served(proc, sim, 20, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    text = one_line(log.read_text(encoding="utf-8"))
    assert "interrupted" in text
    assert "Resume with: squall run in.jsonl -o out.jsonl -c squall.toml" in text

    # In-flight requests landed: every answer the provider served is in the journal.
    states = journal_states(journal)
    assert not any(s == RowState.SENT for s in states.values())
    done = {i for i, s in states.items() if s == RowState.DONE}
    assert 20 <= len(done) < 150
    row_of = digests_to_rows(rows)
    assert {row_of[e.prompt_sha256] for e in sim.served()} == done
    # The output so far: every row, in order, answered where the journal has an answer.
    partial = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in partial] == [r["id"] for r in rows]
    assert {i for i, r in enumerate(partial) if r["response"] is not None} == done
    assert all(
        r["response"] == expected_answer(rows[i]["prompt"])
        for i, r in enumerate(partial)
        if r["response"] is not None
    )

    again = run_squall(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    assert Counter(e.prompt_sha256 for e in sim.served()) == Counter(dict.fromkeys(row_of, 1))


def test_changed_input_is_refused_then_restart_runs_fresh(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1),)))
    rows = arith_rows(30)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url)
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    first = run_squall(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before_output = (tmp_path / "out.jsonl").read_bytes()
    served_before = len(sim.ledger())

    changed = [dict(r) for r in rows]
    changed[17]["prompt"] = "what is 1000 + 1?"  # line 18
    write_jsonl(tmp_path / "in.jsonl", changed)
    res = run_squall(*args, cwd=tmp_path)

    assert res.returncode == 2, res.stderr
    err = one_line(res.stderr)
    assert "line 18" in err and "in.jsonl" in err
    assert "--restart" in err and "--journal" in err
    assert len(sim.ledger()) == served_before
    assert (tmp_path / "out.jsonl").read_bytes() == before_output

    fresh = run_squall(*args, "--restart", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), changed)
    assert len(sim.ledger()) == served_before + 30
