"""SIGKILL of one Ray worker, and of the driver, in the middle of `squall run --ray ADDRESS`.

squall runs as the user runs it (`python -m squall run ... --ray 127.0.0.1:PORT`) against the
session's two-node cluster; the simulator runs as its own process and its ledger (with the
sha256 of every prompt) shows which rows were requested, and when: its times are
`time.monotonic()`, the same clock as this process's on one host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from cli_support import (
    KEY1,
    SimFactory,
    arith_rows,
    assert_complete_output,
    digests_to_rows,
    one_line,
    read_jsonl,
    sim_factory,
    squall_cmd,
    wait_until,
    write_config,
    write_jsonl,
)

import ray
from squall.journal import Journal
from squall.records import RowState
from squall.simulator import SimConfig, SimKey

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

# 50 requests/s declared, 0.1 s latency: about 5 requests in flight cluster-wide, and a
# run of a few hundred rows lasts long enough to be killed in its middle.
SLOW = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.1, latency_jitter_s=0.03)
ENDPOINT = {"rpm": 3000, "max_concurrency": 16}
ARGS = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", "--progress", "plain")


@pytest.fixture
def sim_proc(tmp_path: Path) -> Iterator[SimFactory]:
    """Yield a factory of simulator processes (as tests/cli has), stopped at teardown."""
    make, started = sim_factory(tmp_path)
    yield make
    for sim in reversed(started):
        sim.stop()


def journal_states(path: Path) -> dict[int, RowState]:
    """Return each row's state as the journal holds it (read-only, as `squall status` reads)."""
    with Journal.open(path, read_only=True) as jr:
        return {r.index: r.state for r in jr.iter_results()}


def start_run(
    tmp_path: Path, address: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[bytes]:
    log = tmp_path / "run.log"
    with log.open("ab") as out:
        return subprocess.Popen(
            squall_cmd(*ARGS, "--ray", address, *extra),
            cwd=tmp_path,
            env={**env, "K1": KEY1},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def connect(address: str) -> Any:
    """Connect this process to the cluster (once) to look up the run's actors."""
    if not ray.is_initialized():
        ray.init(address=address, namespace="squall", log_to_driver=False)
    return ray


def worker_names() -> list[str]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"]
        for a in named
        if a["namespace"] == "squall" and a["name"].startswith("squall-worker-")
    )


def test_sigkill_of_one_worker_loses_nothing_and_repeats_only_its_in_flight_rows(
    tmp_path: Path, sim_proc: SimFactory, ray_address: str, ray_env: dict[str, str]
) -> None:
    sim = sim_proc(SLOW)
    rows = arith_rows(700)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url, endpoint=ENDPOINT)
    journal = tmp_path / "out.jsonl.squall.sqlite"
    row_of = digests_to_rows(rows)
    connect(ray_address)

    started = time.monotonic()
    proc = start_run(tmp_path, ray_address, ray_env, "--workers", "3")
    try:
        assert wait_until(lambda: len(sim.served()) >= 150 or proc.poll() is not None, 90)
        assert proc.poll() is None, "the run ended before a worker could be killed"
        names = worker_names()
        assert len(names) == 3, names
        victim = ray.get_actor(names[0], namespace="squall")
        pid = ray.get(victim.pid.remote(), timeout=10)
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        states = journal_states(journal)
        read_at = time.monotonic()
        done_at_kill = {i for i, s in states.items() if s == RowState.DONE}
        sent_at_kill = sum(1 for s in states.values() if s == RowState.SENT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = one_line((tmp_path / "run.log").read_text(encoding="utf-8"))
    assert rc == 0, log[-3000:]
    assert "was lost" in log, log[-3000:]
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    final = journal_states(journal)
    assert len(final) == len(rows) and all(s == RowState.DONE for s in final.values())

    ledger = [e for e in sim.ledger() if e.event == "request"]
    asked = Counter(e.prompt_sha256 for e in ledger)
    assert set(asked) == set(row_of)
    twice = {h for h, n in asked.items() if n > 1}
    # No row the journal held as done at the kill was requested after it.
    for e in ledger:
        if e.t > read_at:
            assert row_of[e.prompt_sha256] not in done_at_kill, e
    # A row requested again was first requested before the kill (it was in flight then).
    first: dict[str, float] = {}
    for e in sorted(ledger, key=lambda e: e.t):
        first.setdefault(e.prompt_sha256, e.t)
    assert all(first[h] <= killed_at for h in twice)
    # ... and there are no more of them than requests in flight on the killed worker can
    # be: at most the rows the journal held as sent, and at most the requests received in
    # the two seconds before the kill (latency 0.1 s, answers streamed every 0.05 s).
    recent = sum(1 for e in ledger if killed_at - 2.0 <= e.t <= killed_at)
    print(
        f"\nray worker kill: {len(ledger)} requests for {len(rows)} rows, {len(twice)} rows "
        f"requested twice; at the kill {len(done_at_kill)} done, {sent_at_kill} sent, "
        f"{recent} requests in the 2 s before; run {time.monotonic() - started:.1f} s"
    )
    assert len(twice) <= sent_at_kill
    assert len(twice) <= recent
    assert sum(asked.values()) - len(rows) == sum(asked[h] - 1 for h in twice)


def test_sigkill_of_the_driver_then_the_same_command_resumes_and_completes(
    tmp_path: Path, sim_proc: SimFactory, ray_address: str, ray_env: dict[str, str]
) -> None:
    sim = sim_proc(SLOW)
    rows = arith_rows(400)
    write_jsonl(tmp_path / "in.jsonl", rows)
    write_config(tmp_path / "squall.toml", sim.url, endpoint=ENDPOINT)
    journal = tmp_path / "out.jsonl.squall.sqlite"
    row_of = digests_to_rows(rows)

    proc = start_run(tmp_path, ray_address, ray_env, "--workers", "2")
    try:
        assert wait_until(lambda: len(sim.served()) >= 100 or proc.poll() is not None, 90)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    states = journal_states(journal)
    done_at_kill = {i for i, s in states.items() if s == RowState.DONE}
    in_flight = sum(1 for s in states.values() if s == RowState.SENT)
    assert 0 < len(done_at_kill) < len(rows)

    resumed_at = time.monotonic()
    again = subprocess.run(
        squall_cmd(*ARGS, "--ray", ray_address, "--workers", "2"),
        cwd=tmp_path,
        env={**ray_env, "K1": KEY1},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    err = one_line(again.stderr + again.stdout)
    assert again.returncode == 0, err[-3000:]
    assert "resuming" in err, err[-3000:]
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    assert all(s == RowState.DONE for s in journal_states(journal).values())

    ledger = [e for e in sim.ledger() if e.event == "request"]
    for e in ledger:
        if e.t > resumed_at:
            assert row_of[e.prompt_sha256] not in done_at_kill, e
    asked = Counter(e.prompt_sha256 for e in ledger)
    assert set(asked) == set(row_of)
    print(
        f"\nray driver kill: {len(done_at_kill)} done and {in_flight} sent at the kill, "
        f"{sum(asked.values()) - len(rows)} requests repeated"
    )
