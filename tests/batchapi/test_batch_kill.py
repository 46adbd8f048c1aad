"""SIGKILL (and Ctrl-C) of a real `squall run --batch-api` process at each step, then resume.

Each test starts one simulator process, runs `python -m squall run ... --batch-api` as a
subprocess, kills it at one point of a chunk's life (uploading, between upload and create,
during the create call, polling, downloading), and runs the same command again, which must
finish. The simulator's ledger then shows every row answered by exactly one batch line, no
row sent online, and as many batches created as the journal has chunks: none paid twice.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

from squall.journal import BatchRecord

from .support import (
    SimProcess,
    batches,
    check_paid_once,
    journal_batches,
    kill_when,
    one_line,
    run_squall,
    simulator,
    start_squall,
    write_config,
    write_rows,
)

ROWS = 250
CHUNK = 100  # 250 rows: chunks of 100, 100, 50
WAIT = 30.0
ARGS = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", "--batch-api")


def prepare(tmp_path: Path, sim: SimProcess) -> list[dict[str, object]]:
    write_config(
        tmp_path / "squall.toml",
        sim.url,
        batch_poll_s=0.05,
        batch_max_requests=CHUNK,
        progress="off",
    )
    return write_rows(tmp_path / "in.jsonl", ROWS)


def journal_of(tmp_path: Path) -> Path:
    return tmp_path / "out.jsonl.squall.sqlite"


def kill_then_resume(
    tmp_path: Path, sim: SimProcess, point: Callable[[], bool], what: str
) -> list[BatchRecord]:
    """Start the run, SIGKILL it once `point()` holds; return the journal's chunks then."""
    proc = start_squall(*ARGS, cwd=tmp_path, log=tmp_path / "run.log")
    try:
        kill_when(proc, point, what)
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
    return journal_batches(journal_of(tmp_path))


def resume_and_check(tmp_path: Path, sim: SimProcess, rows: list[dict[str, object]]) -> None:
    res = run_squall(*ARGS, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    recs = check_paid_once(sim, journal_of(tmp_path), tmp_path / "out.jsonl", rows)
    assert sum(r.rows for r in recs) == ROWS


def test_sigkill_while_uploading_then_resume(tmp_path: Path) -> None:
    with simulator(tmp_path, batches(upload_delay_s=1.5)) as sim:
        rows = prepare(tmp_path, sim)
        journal = journal_of(tmp_path)

        seen: list[float] = []

        def uploading() -> bool:
            # Every chunk made, none with its file id: the first upload is in flight (it
            # started before the next chunk was made). Wait a little more, well within the
            # 1.5 s the simulator holds it, so that the kill lands mid-upload.
            recs = journal_batches(journal)
            if len(recs) < 3 or any(r.file_id is not None for r in recs):
                return False
            seen.append(time.monotonic())
            return seen[-1] - seen[0] >= 0.3

        recs = kill_then_resume(tmp_path, sim, uploading, "a chunk being uploaded")
        assert len(recs) == 3 and all(r.file_id is None for r in recs)
        assert not sim.events("file_upload"), "an upload was stored before the kill"
        resume_and_check(tmp_path, sim, rows)


def test_sigkill_after_upload_before_create_then_resume(tmp_path: Path) -> None:
    with simulator(tmp_path) as sim:
        rows = prepare(tmp_path, sim)
        kill_then_resume(
            tmp_path, sim, lambda: bool(sim.events("file_upload")), "the first file upload"
        )
        assert sim.events("file_upload")
        resume_and_check(tmp_path, sim, rows)


def test_sigkill_during_create_then_resume_adopts_the_batch(tmp_path: Path) -> None:
    with simulator(tmp_path, batches(create_reply_delay_s=1.5)) as sim:
        rows = prepare(tmp_path, sim)
        recs = kill_then_resume(
            tmp_path, sim, lambda: bool(sim.events("batch_create")), "a batch created"
        )
        created = {e.batch_id for e in sim.events("batch_create")}
        assert created
        # The create calls' replies were still held back: the journal knows none of them.
        assert not {r.batch_id for r in recs} & created
        assert any(r.status == "uploaded" for r in recs)
        resume_and_check(tmp_path, sim, rows)
        # The batches created before the kill were adopted, not made again.
        with_ids = {r.batch_id for r in journal_batches(journal_of(tmp_path))}
        assert created <= with_ids


def in_progress(journal: Path) -> bool:
    return any(
        r.batch_id is not None and r.status == "in_progress" for r in journal_batches(journal)
    )


def test_sigkill_while_polling_then_resume(tmp_path: Path) -> None:
    with simulator(tmp_path, batches(line_s=0.02)) as sim:
        rows = prepare(tmp_path, sim)
        journal = journal_of(tmp_path)
        recs = kill_then_resume(tmp_path, sim, lambda: in_progress(journal), "a batch in_progress")
        assert any(r.status == "in_progress" and r.live for r in recs)
        resume_and_check(tmp_path, sim, rows)


def test_sigkill_while_downloading_then_resume(tmp_path: Path) -> None:
    with simulator(tmp_path, batches(content_delay_s=1.5)) as sim:
        rows = prepare(tmp_path, sim)
        journal = journal_of(tmp_path)

        def downloading() -> bool:
            return any(
                r.status == "completed" and r.collected_at is None for r in journal_batches(journal)
            )

        recs = kill_then_resume(tmp_path, sim, downloading, "a completed batch not collected")
        assert any(r.status == "completed" and r.live for r in recs)
        resume_and_check(tmp_path, sim, rows)


def test_ctrl_c_while_polling_leaves_the_batches_live_then_the_rerun_collects_them(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path, batches(line_s=0.03)) as sim:  # 3 s a chunk of 100
        rows = prepare(tmp_path, sim)
        journal = journal_of(tmp_path)
        log = tmp_path / "run.log"
        proc = start_squall(*ARGS, cwd=tmp_path, log=log)
        try:
            kill_when(proc, lambda: in_progress(journal), "a batch in_progress", sig=signal.SIGINT)
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
        text = one_line(log.read_text(encoding="utf-8"))
        assert code == 130, text  # interrupted
        assert "still live at the provider" in text, text
        assert "squall batch cancel" in text
        assert any(r.live and r.batch_id for r in journal_batches(journal))
        res = run_squall("status", journal, "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        account = json.loads(res.stdout)
        assert account["status"] == "interrupted"
        assert any(b["live"] and b["batch_id"] for b in account["batches"])
        resume_and_check(tmp_path, sim, rows)


def test_two_ctrl_c_during_create_cut_the_call_then_the_rerun_adopts_the_batch(
    tmp_path: Path,
) -> None:
    with simulator(tmp_path, batches(create_reply_delay_s=1.5)) as sim:
        rows = prepare(tmp_path, sim)
        log = tmp_path / "run.log"
        proc = start_squall(*ARGS, cwd=tmp_path, log=log)
        try:
            kill_when(
                proc, lambda: bool(sim.events("batch_create")), "a batch created", sig=signal.SIGINT
            )
            # A second signal sent at once could merge with the first while it is pending.
            time.sleep(0.3)
            assert proc.poll() is None, "the first Ctrl-C ended the run before the replies came"
            proc.send_signal(signal.SIGINT)  # the second cuts the create calls still waiting
            code = proc.wait(timeout=WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=WAIT)
        text = one_line(log.read_text(encoding="utf-8"))
        assert code == 130, text
        assert "still live at the provider" in text, text
        recs = journal_batches(journal_of(tmp_path))
        created = {e.batch_id for e in sim.events("batch_create")}
        assert not {r.batch_id for r in recs} & created  # no reply came before the cut
        resume_and_check(tmp_path, sim, rows)
        assert created <= {r.batch_id for r in journal_batches(journal_of(tmp_path))}
