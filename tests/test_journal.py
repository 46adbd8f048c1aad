"""The journal, on real SQLite files: states, resume checks, accounts, and a real kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import squall.journal
from squall.errors import InputChangedError, JournalError
from squall.journal import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    Journal,
    discard,
    migrate,
)
from squall.records import Completion, ErrorInfo, RowState

SRC = str(Path(squall.journal.__file__).resolve().parents[1])


def rows(
    n: int, *, start: int = 0, changed: dict[int, str] | None = None
) -> Iterator[tuple[int, int, str]]:
    """Rows as a reader gives them: index, line (a header on line 1), fingerprint."""
    changed = changed or {}
    for i in range(start, n):
        yield i, i + 2, changed.get(i, f"fp-{i}")


def answer(i: int, *, raw: str | None = None) -> Completion:
    return Completion(
        text=f"answer {i}",
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=20,
        raw=raw,
        request_id=f"req-{i}",
    )


def succeed(j: Journal, i: int, *, endpoint: str = "a", model: str | None = None) -> None:
    j.mark_sent(i)
    j.record_success(i, answer(i), latency_s=0.25, attempts=1, endpoint=endpoint, model=model)


def states(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as conn:
        got = dict(conn.execute("SELECT idx, state FROM rows"))
    conn.close()
    return got


RATE = ErrorInfo("rate_limited", 429, "slow down")
BAD = ErrorInfo("bad_request", 400, "bad prompt")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "run.sqlite"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    j = Journal.open(path)
    yield j
    j.close()


# -- schema -----------------------------------------------------------------------------


def test_migrations_are_numbered_without_gaps() -> None:
    assert [n for n, _ in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == SCHEMA_VERSION


def test_fresh_journal_has_final_schema(path: Path) -> None:
    Journal.open(path).close()
    assert path.parent.is_dir()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"meta", "rows", "sessions"}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rows)")}
        assert {"idx", "line", "fingerprint", "state", "sent_count", "retryable", "raw"} <= columns
    finally:
        conn.close()


def test_stepwise_migration_matches_fresh_schema(tmp_path: Path) -> None:
    Journal.open(tmp_path / "fresh.sqlite").close()
    conn = sqlite3.connect(tmp_path / "stepwise.sqlite", isolation_level=None)
    fresh = sqlite3.connect(tmp_path / "fresh.sqlite")
    try:
        assert migrate(conn) == SCHEMA_VERSION
        assert migrate(conn) == SCHEMA_VERSION  # nothing left to apply
        schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
        assert conn.execute(schema).fetchall() == fresh.execute(schema).fetchall()
    finally:
        conn.close()
        fresh.close()


def test_journal_from_newer_squall_is_refused(path: Path) -> None:
    Journal.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalError, match="newer squall"):
        Journal.open(path)


def test_non_journal_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "input.csv"
    text.write_text("prompt\nhello there, this is not a database at all\n" * 50)
    with pytest.raises(JournalError, match="not a squall journal"):
        Journal.open(text)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a squall journal"):
        Journal.open(other)
    with pytest.raises(JournalError, match="cannot open the file"):
        Journal.open(tmp_path)  # a folder
    # --restart must never delete a file that is not a journal.
    for p in (text, other):
        with pytest.raises(JournalError, match="not a squall journal"):
            discard(p)
        assert p.exists()


def test_sync_full_and_normal(tmp_path: Path) -> None:
    for sync, level in (("normal", 1), ("full", 2)):
        j = Journal.open(tmp_path / f"{sync}.sqlite", sync=sync)  # type: ignore[arg-type]  # loop over the Literal
        try:
            assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        finally:
            j.close()


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


# -- settings and ingest ----------------------------------------------------------------------


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


# -- states ---------------------------------------------------------------------------------


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


def test_iter_todo_after_crash(path: Path) -> None:
    j = Journal.open(path)
    j.ingest(rows(8))
    succeed(j, 0)
    j.mark_sent(1)  # in flight when the run "dies"
    j.mark_sent(2)
    j.record_failure(2, RATE, attempts=5, endpoint="a", retryable=True)
    j.mark_sent(3)
    j.record_failure(3, BAD, attempts=1, endpoint="a", retryable=False)
    j.mark_sent(4)
    j.record_retry(4, RATE)
    j.mark_sent(6)
    # The run "dies" here: nothing more is recorded; the next run opens the file.
    j.close()

    j = Journal.open(path)
    try:
        assert j.in_flight_at_open() == 2
        assert list(j.iter_todo()) == [1, 2, 4, 5, 6, 7]
        assert list(j.iter_todo(retry_failed=True)) == [1, 2, 3, 4, 5, 6, 7]
        assert j.statistics().sent == 2
    finally:
        j.close()


def test_iter_todo_yields_each_row_once_while_rows_change(journal: Journal) -> None:
    journal.ingest(rows(12_000))
    seen = []
    for i in journal.iter_todo():
        seen.append(i)
        journal.mark_sent(i)
        if i % 2:
            journal.record_retry(i, RATE)  # back to PENDING: must not come round again
        else:
            journal.record_success(i, answer(i), latency_s=0.1, attempts=1, endpoint="a")
    assert seen == list(range(12_000))


def test_iter_results_carry_every_field(journal: Journal) -> None:
    journal.ingest(rows(3))
    journal.mark_sent(0)
    journal.record_success(
        0, answer(0, raw='{"id": "x"}'), latency_s=0.5, attempts=2, endpoint="ep1", model="m"
    )
    journal.mark_sent(1)
    journal.record_failure(1, BAD, attempts=1, endpoint="ep2", retryable=False)
    first, second, third = list(journal.iter_results())
    assert first.state == RowState.DONE
    assert first.output_fields() == {
        "response": "answer 0",
        "error": None,
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "latency_s": 0.5,
        "attempts": 2,
        "endpoint": "ep1",
    }
    assert first.raw == '{"id": "x"}'
    assert second.state == RowState.FAILED
    assert second.error == BAD
    assert second.endpoint == "ep2"
    assert third.state == RowState.PENDING and third.response is None


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


# -- accounts -------------------------------------------------------------------------------


def test_statistics(path: Path) -> None:
    with Journal.open(path) as j:
        j.check_settings("fp", {"model": "m1"}, input_name="in.jsonl")
        j.begin_session()
        j.ingest(rows(20))
        for i in range(5):
            succeed(j, i, endpoint="a", model="m1")
        for i in range(5, 8):
            succeed(j, i, endpoint="b", model="m2")
        for i in range(8, 15):
            j.mark_sent(i)
            j.record_failure(i, BAD, attempts=1, endpoint="a", retryable=False)
        j.mark_sent(15)
        j.record_retry(15, RATE)
        j.mark_sent(15)
        j.record_failure(15, RATE, attempts=2, endpoint="b", retryable=True)
        j.mark_sent(16)
        j.end_session("interrupted")
        stats = j.statistics()
    assert (stats.total, stats.done, stats.failed, stats.pending, stats.sent) == (20, 8, 8, 3, 1)
    assert stats.failures["bad_request"].count == 7
    assert stats.failures["bad_request"].rows == [8, 9, 10, 11, 12]
    assert stats.failures["rate_limited"].rows == [15]
    assert stats.requests_sent == 5 + 3 + 7 + 2 + 1
    assert (stats.prompt_tokens, stats.completion_tokens) == (80, 160)
    assert stats.tokens_by_endpoint["a"].rows == 5
    assert stats.tokens_by_endpoint["b"].prompt_tokens == 30
    assert stats.tokens_by_model["m2"].completion_tokens == 60
    assert stats.settings == {"model": "m1"}
    assert stats.input_name == "in.jsonl"
    assert stats.created_at is not None
    assert stats.first_activity is not None and stats.last_activity is not None
    assert stats.first_activity <= stats.last_activity
    assert stats.wall_s >= 0
    assert [s.outcome for s in stats.sessions] == ["interrupted"]


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


def test_meta_values(journal: Journal) -> None:
    assert journal.get_meta("prices") is None
    journal.set_meta("prices", '{"m": [1.0, 2.0]}')
    journal.set_meta("prices", '{"m": [3.0, 4.0]}')
    assert journal.get_meta("prices") == '{"m": [3.0, 4.0]}'
    with pytest.raises(JournalError, match="journal's own"):
        journal.set_meta("settings", "{}")


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
