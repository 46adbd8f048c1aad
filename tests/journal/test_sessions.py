"""The account a journal keeps over its sessions (schema 3): every row's retries, and each
key's counters as each session left them; and what a journal older than that gives instead."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from journal_support import RATE, full_rows, key, succeed

from squall.events import KeyState
from squall.journal import APPLICATION_ID, Journal, JournalError, KeyTotals, migrate


def test_retries_are_counted_per_row_over_every_session(journal: Journal) -> None:
    journal.ingest(full_rows(3))
    journal.begin_session()
    for _ in range(2):
        journal.mark_sent(0)
        journal.record_retry(0, RATE)
    journal.end_session("interrupted")
    assert journal.statistics().retries == 2
    journal.begin_session()
    journal.mark_sent(1)
    journal.record_retry(1, RATE)
    succeed(journal, 0)
    succeed(journal, 1)
    # A session that dies without an end keeps the retries it committed.
    stats = journal.statistics()
    assert (stats.retries, stats.requests_sent) == (3, 5)


def test_retries_are_kept_with_group_commits(path: Path) -> None:
    with Journal.open(path, group_commits=True) as j:
        j.ingest(full_rows(2))
        j.mark_sent(0)
        j.record_retry(0, RATE)
        j.commit()
    with Journal.open(path, read_only=True) as j:
        assert j.statistics().retries == 1


def test_end_session_records_the_keys_and_statistics_sums_them(journal: Journal) -> None:
    journal.ingest(full_rows(1))
    journal.begin_session()
    journal.end_session(
        "interrupted",
        [key("a#1", sent=5, ok=3, rate_limited=1, errors=1), key("a#2", sent=2, ok=2)],
    )
    journal.begin_session()
    journal.end_session(
        "completed",
        [
            key("b#1", endpoint="b", sent=1, ok=1),
            key("a#1", sent=4, ok=4, state=KeyState.COOLING, masked="sk-...wxyz"),
        ],
    )
    assert journal.statistics().keys == (
        KeyTotals("a#1", "a", "sk-...wxyz", KeyState.COOLING, 9, 7, 1, 1, sessions=2),
        KeyTotals("a#2", "a", "sk-...abcd", KeyState.ACTIVE, 2, 2, 0, 0, sessions=1),
        KeyTotals("b#1", "b", "sk-...abcd", KeyState.ACTIVE, 1, 1, 0, 0, sessions=1),
    )


def test_keys_of_the_same_label_on_two_endpoints_are_two_keys(journal: Journal) -> None:
    journal.begin_session()
    journal.end_session("completed", [key("k", endpoint="a", sent=1), key("k", endpoint="b")])
    assert [(k.endpoint, k.sent) for k in journal.statistics().keys] == [("a", 1), ("b", 0)]


def test_an_unknown_outcome_records_neither_the_end_nor_the_keys(journal: Journal) -> None:
    journal.begin_session()
    with pytest.raises(JournalError, match="unknown session outcome"):
        journal.end_session("exploded", [key("a#1", sent=1)])  # type: ignore[arg-type]  # what is refused
    stats = journal.statistics()
    assert stats.keys == () and stats.sessions[-1].outcome is None


def test_a_session_ended_without_keys_records_none(journal: Journal) -> None:
    journal.begin_session()
    journal.end_session("completed")
    assert journal.statistics().keys == ()


def test_the_journal_holds_no_key_but_its_masked_form(path: Path) -> None:
    secret = "sk-live-SECRET1234567890abcd"
    with Journal.open(path) as j:
        j.begin_session()
        j.end_session("completed", [key("a#1", masked="sk-...abcd")])
    data = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    assert secret[8:-4].encode() not in data
    assert b"sk-...abcd" in data


# -- a journal from schema 2 ------------------------------------------------------------------


def make_v2_journal(path: Path) -> None:
    """Write a journal as a schema-2 squall left it: 3 rows, row 0 answered after a retry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode = WAL")
        assert migrate(conn, upto=2) == 2
        conn.executemany(
            "INSERT INTO rows (idx, line, fingerprint) VALUES (?, ?, ?)",
            [(i, i + 2, f"fp-{i}") for i in range(3)],
        )
        conn.execute(
            "UPDATE rows SET state = 2, response = 'old', prompt_tokens = 3, "
            "completion_tokens = 4, endpoint = 'a', attempts = 2, sent_count = 2, "
            "updated_at = 2.0 WHERE idx = 0"
        )
        conn.execute(
            "INSERT INTO sessions (started_at, ended_at, outcome, pid) "
            "VALUES (1.0, 2.0, 'completed', 1)"
        )
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_schema_2_journal_reads_without_retries_or_keys(path: Path) -> None:
    make_v2_journal(path)
    with Journal.open(path, read_only=True) as j:
        assert j.schema_version == 2
        stats = j.statistics()
    assert (stats.total, stats.done, stats.requests_sent) == (3, 1, 2)
    assert stats.retries is None and stats.keys == ()
    assert user_version(path) == 2  # a reader changes nothing


def test_a_schema_2_journal_counts_from_its_migration_on(path: Path) -> None:
    make_v2_journal(path)
    with Journal.open(path) as j:
        assert j.statistics().retries == 0  # the old retries were never counted
        j.begin_session()
        j.mark_sent(1)
        j.record_retry(1, RATE)
        j.end_session("interrupted", [key("a#1", sent=1, errors=1)])
    with Journal.open(path, read_only=True) as j:
        stats = j.statistics()
    assert stats.retries == 1
    assert [(k.label, k.sent, k.errors) for k in stats.keys] == [("a#1", 1, 1)]
