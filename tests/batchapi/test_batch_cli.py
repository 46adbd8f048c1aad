"""The `squall` command around the Batch API, end to end: status, cancel, refusals, kinds.

Every test runs `python -m squall ...` as a subprocess against one simulator process (its
ledger file is the witness of what was sent), and reads the journal read-only.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from squall.journal import Journal
from squall.simulator import expected_answer, expected_embedding, prompt_digest
from squall.simulator.embeddings import DEFAULT_DIMENSIONS

from .support import (
    WAIT_S,
    SimProcess,
    batches,
    check_paid_once,
    journal_batches,
    kill_when,
    one_line,
    read_jsonl,
    run_squall,
    simulator,
    start_squall,
    wait_until,
    write_config,
    write_rows,
)

RUN = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")


def journal_of(tmp_path: Path) -> Path:
    return tmp_path / "out.jsonl.squall.sqlite"


def config(tmp_path: Path, sim: SimProcess, **top: Any) -> Path:
    settings: dict[str, Any] = {"batch_poll_s": 0.05, "progress": "off", **top}
    return write_config(tmp_path / "squall.toml", sim.url, **settings)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=WAIT_S)


def live_batch_in_progress(journal: Path) -> bool:
    return any(
        r.live and r.batch_id is not None and r.status == "in_progress"
        for r in journal_batches(journal)
    )


def test_status_shows_the_batches_of_a_finished_batch_run(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        config(tmp_path, sim, batch_max_requests=20)
        rows = write_rows(tmp_path / "in.jsonl", 50)
        res = run_squall(*RUN, "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        check_paid_once(sim, journal_of(tmp_path), tmp_path / "out.jsonl", rows)
        ids = [e.batch_id for e in sim.events("batch_create")]
        assert len(ids) == 3  # 20 + 20 + 10

        text = run_squall("status", journal_of(tmp_path), cwd=tmp_path)
        assert text.returncode == 0, text.stderr
        assert "Batch API batches" in text.stdout
        for batch_id in ids:
            assert batch_id in text.stdout
        assert text.stdout.count("completed, collected") == 3

        res = run_squall("status", journal_of(tmp_path), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        data = json.loads(res.stdout)
        got = data["batches"]
        assert sorted(b["batch_id"] for b in got) == sorted(ids)
        assert [b["rows"] for b in got] == [20, 20, 10]
        assert [b["completed"] for b in got] == [20, 20, 10]
        assert all(b["failed"] == 0 and b["status"] == "completed" for b in got)
        assert not any(b["live"] for b in got)
        assert data["done"] == 50


def test_batch_cancel_of_a_slow_batch_then_reruns_collect_it_and_finish_the_rest(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path, batches(line_s=0.15)) as sim:
        config(tmp_path, sim, batch_max_requests=500)
        rows = write_rows(tmp_path / "in.jsonl", 80)  # one batch, 12 s of lines
        journal = journal_of(tmp_path)
        log = tmp_path / "run.log"
        cancel = ("batch", "cancel", journal, "-c", "squall.toml")
        proc = start_squall(*RUN, "--batch-api", cwd=tmp_path, log=log)
        try:
            assert wait_until(
                lambda: (
                    proc.poll() is not None
                    or (live_batch_in_progress(journal) and len(sim.events("batch_line")) >= 5)
                )
            )
            assert proc.poll() is None, log.read_text()
            # `squall status` reads the journal while the run holds it.
            res = run_squall("status", journal, "--json", cwd=tmp_path)
            assert res.returncode == 0, res.stderr
            live = [b for b in json.loads(res.stdout)["batches"] if b["live"]]
            assert [b["status"] for b in live] == ["in_progress"], live
            assert live[0]["batch_id"] == sim.events("batch_create")[0].batch_id
            # While the run holds the journal, cancel is refused (and cancels nothing).
            res = run_squall(*cancel, cwd=tmp_path)
            assert res.returncode != 0
            assert "in use by another squall run" in one_line(res.stderr), res.stderr
            # Ctrl-C: the run stops, its batch goes on at the provider.
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=WAIT_S) == 130, log.read_text()
        finally:
            stop(proc)
        (batch_id,) = [e.batch_id for e in sim.events("batch_create")]
        assert sim.get(f"/batches/{batch_id}")["status"] == "in_progress"

        res = run_squall(*cancel, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert batch_id in res.stderr, res.stderr
        assert wait_until(
            lambda: sim.get(f"/batches/{batch_id}")["status"] == "cancelled", step=0.05
        ), (sim.get(f"/batches/{batch_id}")["status"], res.stderr)
        listed = {b["id"]: b for b in sim.get("/batches?limit=100")["data"]}
        assert listed[batch_id]["status"] == "cancelled"
        first = {e.custom_id for e in sim.events("batch_line")}
        assert 5 <= len(first) < len(rows)

        # The rerun collects what the cancelled batch answered, then (its next pass) submits
        # the rest in a new batch and finishes every row.
        res = run_squall(*RUN, "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / "out.jsonl")
        assert [r["response"] for r in out] == [expected_answer(str(r["prompt"])) for r in rows]
        lines = sim.events("batch_line")
        per_id = Counter(e.custom_id for e in lines)
        assert set(per_id) == {f"squall-{i}" for i in range(len(rows))}
        assert set(per_id.values()) == {1}, "a line was answered in two batches"
        second = [e for e in sim.events("batch_create") if e.batch_id != batch_id]
        assert len(second) == 1
        assert {e.custom_id for e in lines if e.batch_id == second[0].batch_id} == (
            set(per_id) - first
        )
        assert not sim.events("request")


def test_restart_and_an_online_run_leave_a_live_batch_alone(tmp_path: Path) -> None:
    with simulator(tmp_path, batches(line_s=0.03)) as sim:
        config(tmp_path, sim, batch_max_requests=40)
        rows = write_rows(tmp_path / "in.jsonl", 60)  # chunks of 40 and 20
        journal = journal_of(tmp_path)
        proc = start_squall(*RUN, "--batch-api", cwd=tmp_path, log=tmp_path / "run.log")
        try:
            kill_when(proc, lambda: live_batch_in_progress(journal), "a batch in_progress")
            assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        finally:
            stop(proc)
        live = [r for r in journal_batches(journal) if r.live]
        assert live
        before = len(sim.ledger())

        res = run_squall(*RUN, "--batch-api", "--restart", cwd=tmp_path)
        assert res.returncode != 0
        text = one_line(res.stderr)
        assert "live Batch API batch" in text and "squall batch cancel" in text, text
        assert journal.exists() and len(journal_batches(journal)) == len(live)

        # Online: the rows of live chunks are not sent; any other row may be.
        held = chunk_digests(rows, journal)
        assert held
        res = run_squall(*RUN, "--progress", "plain", cwd=tmp_path)
        text = one_line(res.stderr)
        assert "in live Batch API batches" in text, text
        assert res.returncode != 0  # their rows are left to do
        online = [e for e in sim.ledger()[before:] if e.event == "request"]
        assert not {e.prompt_sha256 for e in online} & held, "a row of a live batch went online"

        res = run_squall(*RUN, "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / "out.jsonl")
        assert [r["response"] for r in out] == [expected_answer(str(r["prompt"])) for r in rows]
        per_id = Counter(e.custom_id for e in sim.events("batch_line"))
        assert set(per_id.values()) == {1}
        assert len(sim.events("batch_create")) == len(journal_batches(journal))


def chunk_digests(rows: list[dict[str, Any]], journal: Path) -> set[str]:
    """Return the prompt digests of the rows the journal's live chunks hold."""
    with Journal.open(journal, read_only=True) as jr:
        held: set[int] = set()
        for rec in jr.batches.records(live_only=True):
            held |= set(jr.batches.rows_of(rec.chunk))
    return {prompt_digest(str(rows[i]["prompt"])) for i in held}


def dry_run_cost(tmp_path: Path, *extra: str) -> float:
    res = run_squall(*RUN, "--dry-run", *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    m = re.search(r"cost\s+\$([0-9.,]+)", res.stderr + res.stdout)
    assert m, res.stderr
    return float(m.group(1).replace(",", ""))


def test_dry_run_with_batch_api_costs_half(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        write_config(
            tmp_path / "squall.toml",
            sim.url,
            prices={"input": 10000.0, "output": 20000.0},
            progress="off",
            max_tokens=50,
        )
        write_rows(tmp_path / "in.jsonl", 10)
        online = dry_run_cost(tmp_path)
        batch = dry_run_cost(tmp_path, "--batch-api")
        assert online > 0
        assert batch == pytest.approx(online / 2, rel=1e-3)
        assert not sim.ledger()


def test_embeddings_max_inputs_packs_online_requests(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        config(tmp_path, sim)
        rows = write_rows(tmp_path / "in.jsonl", 10)
        args = (*RUN, "--api", "embeddings", "--embeddings-max-inputs", "3")
        res = run_squall(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        requests = sim.events("request")
        assert sorted(e.inputs for e in requests) == [1, 3, 3, 3]
        out = read_jsonl(tmp_path / "out.jsonl")
        want = [expected_embedding(str(r["prompt"]), DEFAULT_DIMENSIONS) for r in rows]
        assert [r["embedding"] for r in out] == want


def test_embeddings_max_inputs_out_of_range_is_refused(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        config(tmp_path, sim)
        write_rows(tmp_path / "in.jsonl", 10)
        for bad in ("0", "3000"):
            args = (*RUN, "--api", "embeddings", "--embeddings-max-inputs", bad)
            res = run_squall(*args, cwd=tmp_path)
            assert res.returncode != 0
            assert "embeddings_max_inputs" in res.stderr, res.stderr
            assert "Traceback" not in res.stderr
        assert not sim.ledger()


def test_embeddings_through_the_batch_api(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        config(tmp_path, sim, batch_max_requests=4)
        rows = write_rows(tmp_path / "in.jsonl", 10)
        res = run_squall(*RUN, "--api", "embeddings", "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / "out.jsonl")
        want = [expected_embedding(str(r["prompt"]), DEFAULT_DIMENSIONS) for r in rows]
        assert [r["embedding"] for r in out] == want
        creates = sim.events("batch_create")
        assert len(creates) == 3 and {e.kind for e in creates} == {"/v1/embeddings"}
        assert Counter(e.custom_id for e in sim.events("batch_line")) == Counter(
            f"squall-{i}" for i in range(10)
        )
        assert not sim.events("request")


def test_completions_through_the_batch_api(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        config(tmp_path, sim)
        rows = write_rows(tmp_path / "in.jsonl", 10)
        res = run_squall(*RUN, "--api", "completions", "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / "out.jsonl")
        assert [r["response"] for r in out] == [expected_answer(str(r["prompt"])) for r in rows]
        creates = sim.events("batch_create")
        assert len(creates) == 1 and creates[0].kind == "/v1/completions"
        assert len(sim.events("batch_line")) == 10
        assert not sim.events("request")


def test_batch_cancel_after_a_kill_during_create_cancels_the_batch_the_journal_missed(
    tmp_path: Path,
) -> None:
    # Lines slow enough (6 s a batch) that the cancel lands while every batch runs.
    with simulator(tmp_path, batches(create_reply_delay_s=1.5, line_s=0.15)) as sim:
        config(tmp_path, sim, batch_max_requests=40)
        rows = write_rows(tmp_path / "in.jsonl", 120)  # chunks of 40
        journal = journal_of(tmp_path)
        proc = start_squall(*RUN, "--batch-api", cwd=tmp_path, log=tmp_path / "run.log")
        try:
            kill_when(proc, lambda: bool(sim.events("batch_create")), "a batch created")
            assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        finally:
            stop(proc)
        assert not any(r.batch_id for r in journal_batches(journal))

        res = run_squall("batch", "cancel", journal, "-c", "squall.toml", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        created = {e.batch_id for e in sim.events("batch_create")}
        assert created
        # Every batch the provider made is cancelled, though the journal never learnt its id.
        assert wait_until(
            lambda: all(sim.get(f"/batches/{b}")["status"] == "cancelled" for b in created),
            step=0.05,
        ), [sim.get(f"/batches/{b}")["status"] for b in created]
        for b in created:
            assert b in res.stderr, res.stderr
        assert {r.batch_id for r in journal_batches(journal)} - {None} == created
        assert len(sim.events("batch_line")) < len(rows)

        # The rerun collects the cancelled batches, and its next pass sends the rest; a
        # chunk never submitted was released by the cancel at once.
        res = run_squall(*RUN, "--batch-api", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out = read_jsonl(tmp_path / "out.jsonl")
        assert [r["response"] for r in out] == [expected_answer(str(r["prompt"])) for r in rows]
        per_id = Counter(e.custom_id for e in sim.events("batch_line"))
        assert set(per_id) == {f"squall-{i}" for i in range(len(rows))}
        assert set(per_id.values()) == {1}, "a line was answered in two batches"
        recs = journal_batches(journal)
        creates = sim.events("batch_create")
        assert len(creates) == len({e.batch_id for e in creates})
        assert {e.batch_id for e in creates} == {r.batch_id for r in recs} - {None}
        assert not sim.events("request")


# Whatever the progress mode, the account says why rows were left: the live batches hold them.
def test_an_online_run_with_progress_off_says_its_rows_are_in_live_batches(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path, batches(line_s=0.05)) as sim:
        config(tmp_path, sim, batch_max_requests=100)
        write_rows(tmp_path / "in.jsonl", 30)
        journal = journal_of(tmp_path)
        proc = start_squall(*RUN, "--batch-api", cwd=tmp_path, log=tmp_path / "run.log")
        try:
            kill_when(proc, lambda: any(r.batch_id for r in journal_batches(journal)), "a batch")
            assert proc.wait(timeout=WAIT_S) == -signal.SIGKILL
        finally:
            stop(proc)
        res = run_squall(*RUN, cwd=tmp_path)  # online, progress "off" from the config
        text = one_line(res.stderr)
        assert res.returncode == 1, text
        assert not sim.events("request")
        assert "status completed" not in text, text
        assert "in live Batch API batches" in text, text
