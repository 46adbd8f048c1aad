"""The journal's writing half, on real SQLite files: one writer, settings, ingest, states,
sessions, group commits, and a real kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from journal_support import BAD, RATE, answer, body_of, data_of, full_rows, rows, states, succeed

import squall
from squall.errors import InputChangedError, JournalError
from squall.journal import IngestRow, Journal, discard
from squall.records import Completion, RowState

# The tree under test: the kill -9 test's child must import this squall, not an installed one.
SRC = str(Path(squall.__file__).resolve().parents[1])


# -- one writer; read-only; discard --------------------------------------------------------


def test_second_writer_is_refused_and_reader_allowed(path: Path) -> None:
    j = Journal.open(path)
    try:
        j.ingest(rows(3))
        with pytest.raises(JournalError, match="in use by another squall run"):
            Journal.open(path)
        with pytest.raises(JournalError, match="in use"):
            discard(path)
        reader = Journal.open(path, read_only=True)
        try:
            assert reader.statistics().total == 3
            assert reader.in_use_elsewhere()
            with pytest.raises(JournalError):
                reader.mark_sent(0)
        finally:
            reader.close()
    finally:
        j.close()
    reader = Journal.open(path, read_only=True)
    assert not reader.in_use_elsewhere()
    reader.close()
    Journal.open(path).close()  # the lock went with close()


def test_read_only_needs_an_existing_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(tmp_path / "missing.sqlite", read_only=True)


def test_discard_removes_journal_and_side_files(path: Path) -> None:
    j = Journal.open(path)
    j.ingest(rows(3))
    j.close()
    discard(path)
    assert list(path.parent.iterdir()) == []
    discard(path)  # nothing there: fine
    j = Journal.open(path)
    assert j.ingest(rows(2)).new == 2
    j.close()


def test_settings_stored_then_checked(path: Path) -> None:
    described = {"model": "m1", "temperature": 0.2, "system": "be brief"}
    with Journal.open(path) as j:
        j.check_settings("fp1", described, input_name="prompts.csv")
    with Journal.open(path) as j:
        j.check_settings("fp1", described, input_name="prompts.csv")
        assert j.get_meta("input_name") == "prompts.csv"
        changed = {**described, "model": "m2", "max_tokens": 50}
        del changed["system"]
        with pytest.raises(InputChangedError) as err:
            j.check_settings("fp2", changed, input_name="prompts.csv")
    text = str(err.value)
    assert '"m1" -> "m2"' in text
    assert 'max_tokens: "<unset>" -> 50' in text
    assert 'system: "be brief" -> "<unset>"' in text
    assert "temperature" not in text
    assert "--restart" in text and "--journal" in text


def test_settings_change_without_description_names_fingerprints(journal: Journal) -> None:
    journal.check_settings("fp1", {"model": "m"}, input_name="in.jsonl")
    with pytest.raises(InputChangedError, match="fp1 -> fp2"):
        journal.check_settings("fp2", {"model": "m"}, input_name="in.jsonl")


def test_ingest_new_input(journal: Journal) -> None:
    report = journal.ingest(rows(12_001))
    assert (report.total, report.new, report.pending) == (12_001, 12_001, 12_001)
    assert (report.done, report.failed, report.in_flight) == (0, 0, 0)
    assert list(journal.iter_todo()) == list(range(12_001))


def test_ingest_identical_rerun_changes_nothing(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(7000))
        succeed(j, 3)
        j.mark_sent(4)
        j.record_failure(5, BAD, attempts=1, endpoint="a", retryable=False)
    with Journal.open(path) as j:
        report = j.ingest(rows(7000))
    assert (report.total, report.new, report.done, report.failed) == (7000, 0, 1, 1)
    assert (report.pending, report.in_flight) == (6997, 1)


def test_ingest_longer_input_adds_rows(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(5))
        succeed(j, 0)
    with Journal.open(path) as j:
        report = j.ingest(rows(8))
        assert (report.total, report.new, report.done) == (8, 3, 1)
        assert list(j.iter_todo()) == [1, 2, 3, 4, 5, 6, 7]


def test_changed_row_is_named_with_its_line_and_nothing_inserted(path: Path) -> None:
    with Journal.open(path) as j:
        j.check_settings("s", {}, input_name="prompts.csv")
        j.ingest(rows(12_000))
    with Journal.open(path) as j:
        with pytest.raises(InputChangedError) as err:
            j.ingest(rows(15_000, changed={7001: "other", 9000: "other"}))
        assert err.value.row == 7001
        text = str(err.value)
        assert "prompts.csv line 7003 (row 7001)" in text
        assert "--restart" in text and "--journal NEW.sqlite" in text
        assert j.statistics().total == 12_000


def test_shorter_input_is_detected(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(10))
    with Journal.open(path) as j:
        with pytest.raises(InputChangedError, match=r"line 9 \(row 7\).*7 rows.*holds 10") as err:
            j.ingest(rows(7))
        assert err.value.row == 7


def test_ingest_needs_rows_in_order(journal: Journal) -> None:
    with pytest.raises(JournalError, match="index 2 where 1"):
        journal.ingest([(0, 2, "a"), (2, 4, "c")])


@pytest.mark.slow  # ~3 s: tracemalloc slows the 400k rows handled
def test_ingest_of_200k_rows_stays_in_bounded_memory(journal: Journal) -> None:
    n = 200_000
    tracemalloc.start()
    try:
        journal.ingest(rows(n))
        _, first_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        report = journal.ingest(rows(n))  # the comparing path
        _, second_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.total == n and report.new == 0
    # Holding all rows would take ~40 MB; a 5000-row chunk takes ~1-2 MB.
    assert first_peak < 6_000_000, first_peak
    assert second_peak < 6_000_000, second_peak


# -- ingest with what sending and writing need (schema 2) -------------------------------------


def stored(path: Path, index: int) -> tuple[object, ...]:
    with sqlite3.connect(path) as conn:
        got = conn.execute(
            "SELECT i.data, i.body, i.est_tokens, i.row_model, i.custom_id FROM rows r "
            "LEFT JOIN row_inputs i ON i.idx = r.idx WHERE r.idx = ?",
            (index,),
        ).fetchone()
    conn.close()
    return tuple(got)


def test_ingest_rows_store_data_body_and_batch_fields(path: Path, journal: Journal) -> None:
    report = journal.ingest(full_rows(6001, batch=True))
    assert (report.total, report.new, report.refreshed) == (6001, 6001, 0)
    data, body, est, model, cid = stored(path, 6000)
    assert isinstance(data, str) and isinstance(body, str)
    assert json.loads(data) == data_of(6000) and json.loads(body) == body_of(6000)
    assert (est, model, cid) == (6010, "m-6000", "req-6000")
    # JSON text is stored as given; missing fields stay NULL.
    journal.ingest([*full_rows(6001), IngestRow(6001, 6003, "fp-x", data='{"a": 1}')])
    assert stored(path, 6001) == ('{"a": 1}', None, None, None, None)


def test_bare_and_full_rows_mix(path: Path, journal: Journal) -> None:
    journal.ingest([(0, 2, "fp-0"), IngestRow(1, 3, "fp-1", body={"x": 1}, est_tokens=4)])
    assert stored(path, 0) == (None, None, None, None, None)
    assert stored(path, 1) == (None, '{"x":1}', 4, None, None)


def test_reingest_fills_in_missing_data_and_body_only(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(7000))  # as an older squall ingested: no data, no body
        succeed(j, 1)
        j.mark_sent(2)
        j.record_failure(2, BAD, attempts=1, endpoint="a", retryable=False)
    with Journal.open(path) as j:
        report = j.ingest(full_rows(7000))
        assert (report.new, report.refreshed, report.done, report.failed) == (0, 7000, 1, 1)
        results = {r.index: r for r in j.iter_results()}
        assert results[1].response == "answer 1" and results[1].state == RowState.DONE
        assert results[2].error == BAD
        assert states(path)[2] == RowState.FAILED
        assert j.ingest(full_rows(7000)).refreshed == 0  # nothing left to fill in
    assert json.loads(str(stored(path, 1)[0])) == data_of(1)
    # Stored data is never replaced by what a later ingest brings.
    with Journal.open(path) as j:
        j.ingest(IngestRow(*r[:3], data={"other": True}) for r in full_rows(7000))
    assert json.loads(str(stored(path, 1)[0])) == data_of(1)


def test_changed_full_row_is_refused_and_nothing_refreshed(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(10))
    with Journal.open(path) as j:
        changed = [r._replace(fingerprint="new") if r.index == 7 else r for r in full_rows(12)]
        with pytest.raises(InputChangedError) as err:
            j.ingest(changed)
        assert err.value.row == 7
        assert j.statistics().total == 10
    assert stored(path, 0) == (None, None, None, None, None)


@pytest.mark.slow  # a few s: tracemalloc slows the 60k rows handled
def test_ingest_of_full_rows_stays_in_bounded_memory(journal: Journal) -> None:
    n = 30_000
    tracemalloc.start()
    try:
        journal.ingest(full_rows(n))
        _, first_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        report = journal.ingest(full_rows(n))  # the comparing path
        _, second_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.total == n and report.new == 0 and report.refreshed == 0
    # Holding all rows (with their data and bodies) would take over 33 MB; a chunk ~12.
    assert first_peak < 20_000_000, first_peak
    assert second_peak < 20_000_000, second_peak


def test_state_transitions(path: Path, journal: Journal) -> None:
    journal.ingest(rows(4))
    journal.mark_sent(0)
    assert states(path)[0] == RowState.SENT
    journal.record_retry(0, RATE)
    assert states(path)[0] == RowState.PENDING
    succeed(journal, 0)
    assert states(path)[0] == RowState.DONE

    journal.mark_sent(1)
    journal.record_failure(1, BAD, attempts=1, endpoint="a", retryable=False)
    assert states(path)[1] == RowState.FAILED
    journal.mark_sent(1)  # a FAILED row may be sent again (retry_failed)
    journal.record_success(1, answer(1), latency_s=0.1, attempts=1, endpoint="b")

    # A failure recorded before any request left (e.g. the prompt could not be built).
    journal.record_failure(2, BAD, attempts=0, endpoint=None, retryable=False)
    assert states(path)[2] == RowState.FAILED

    # A DONE row is final: its answer is never overwritten.
    writes: list[Callable[[], None]] = [
        lambda: journal.mark_sent(0),
        lambda: journal.record_retry(0, RATE),
        lambda: journal.record_failure(0, BAD, attempts=1, endpoint="a", retryable=True),
        lambda: journal.record_success(0, answer(9), latency_s=1, attempts=1, endpoint="a"),
    ]
    for write in writes:
        with pytest.raises(JournalError, match="row 0: it is DONE already"):
            write()
    with pytest.raises(JournalError, match="row 99: it is not in the journal"):
        journal.mark_sent(99)
    results = {r.index: r for r in journal.iter_results()}
    assert results[0].response == "answer 0"
    assert results[0].sent_count == 2
    assert results[0].error is None  # the retry's error is cleared by the answer
    assert results[3].state == RowState.PENDING


@pytest.mark.parametrize("request_id", [None, "chatcmpl-7"])
@pytest.mark.parametrize("raw", [None, '{"id": "chatcmpl-7"}'])
def test_answer_keeps_request_id_and_raw_whether_given_or_not(
    journal: Journal, path: Path, request_id: str | None, raw: str | None
) -> None:
    journal.ingest(rows(1))
    journal.mark_sent(0)
    got = Completion("a", "stop", 1, 2, raw=raw, request_id=request_id)
    journal.record_success(0, got, latency_s=0.1, attempts=1, endpoint="e", model="m")
    journal.close()
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT request_id, raw, response FROM rows WHERE idx = 0").fetchone()
    conn.close()
    assert stored == (request_id, raw, "a")


# -- sessions -----------------------------------------------------------------------------


def test_sessions_show_a_run_that_died(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(rows(3))
        first = j.begin_session()
        succeed(j, 0)
        # no end_session: the process "died"
    with Journal.open(path) as j:
        second = j.begin_session()
        succeed(j, 1)
        j.end_session("completed")
        sessions = j.statistics().sessions
        with pytest.raises(JournalError, match="without begin_session"):
            j.end_session("completed")
    assert [s.id for s in sessions] == [first, second]
    assert sessions[0].outcome is None and sessions[0].ended_at is None
    assert sessions[1].outcome == "completed"
    assert sessions[0].pid == os.getpid()


# -- a real crash ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from squall.journal import Journal
    from squall.records import Completion

    n = int(sys.argv[2])
    group = sys.argv[3] == "group"
    j = Journal.open(sys.argv[1], group_commits=group)
    j.ingest((i, i + 2, f"fp-{i}") for i in range(n))
    for i in range(n):
        j.mark_sent(i)
        j.record_success(
            i, Completion(f"answer {i}", "stop", 1, 2), latency_s=0.1, attempts=1, endpoint="a"
        )
        if group and i % 10 == 9:
            j.commit()  # as the engine does once per event-loop turn
        if i % 100 == 99:
            print(i, flush=True)  # printed only after the row's commit
    """
)


@pytest.mark.parametrize("commits", ["each", "group"])
def test_sigkill_mid_run_keeps_every_committed_row(
    path: Path, tmp_path: Path, commits: str
) -> None:
    n = 50_000
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(n), commits],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    committed = -1
    try:
        for _ in range(n // 100):
            line = proc.stdout.readline()
            if not line:
                break
            committed = int(line)
            if committed >= 1999:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 1999

    with Journal.open(path) as j:
        results = list(j.iter_results())
        assert len(results) == n
        assert j._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert j.in_flight_at_open() <= 1
        done = [r for r in results if r.state == RowState.DONE]
        assert len(done) > committed and len(done) < n  # killed mid-way
        for r in results[: committed + 1]:
            assert r.state == RowState.DONE and r.response == f"answer {r.index}"
        # Done rows form a prefix, then at most one row in flight, then untouched rows.
        tail = [r.state for r in results[len(done) :]]
        assert set(tail[1:]) <= {RowState.PENDING}
        assert tail[0] in (RowState.SENT, RowState.PENDING)
        assert next(j.iter_todo()) == len(done)


def test_group_commits_are_invisible_to_readers_until_commit(path: Path) -> None:
    j = Journal.open(path, group_commits=True)
    j.ingest(rows(3))
    reader = Journal.open(path, read_only=True)
    try:
        succeed(j, 0)
        j.mark_sent(1)
        assert states(path) == {0: RowState.PENDING, 1: RowState.PENDING, 2: RowState.PENDING}
        assert reader.statistics().done == 0
        j.commit()
        assert states(path) == {0: RowState.DONE, 1: RowState.SENT, 2: RowState.PENDING}
        assert reader.statistics().done == 1
        j.commit()  # nothing open: nothing to do
        succeed(j, 1)
        j.set_meta("note", "x")  # any other write commits the open changes first
        assert states(path)[1] == RowState.DONE
        j.mark_sent(2)
    finally:
        reader.close()
        j.close()  # commits too
    j.close()  # twice is fine
    assert states(path)[2] == RowState.SENT


def test_a_refused_group_change_keeps_the_others(path: Path) -> None:
    with Journal.open(path, group_commits=True) as j:
        j.ingest(rows(2))
        succeed(j, 0)
        j.mark_sent(1)
        with pytest.raises(JournalError, match="DONE row is final"):
            succeed(j, 0)
        j.commit()
    assert states(path) == {0: RowState.DONE, 1: RowState.SENT}
