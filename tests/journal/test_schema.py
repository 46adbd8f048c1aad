"""The journal file: its schema and migrations, files it refuses, and old files it reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from journal_support import full_rows, rows

from squall.errors import JournalError
from squall.journal import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    Journal,
    discard,
    migrate,
)
from squall.records import RowState


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
        assert tables == {"meta", "rows", "sessions", "row_inputs", "session_keys", "batches"}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(rows)")}
        assert {"idx", "line", "fingerprint", "state", "sent_count", "retryable", "raw"} <= columns
        assert "retries" in columns
        keys = {r[1] for r in conn.execute("PRAGMA table_info(session_keys)")}
        assert keys == {
            "session",
            "endpoint",
            "label",
            "masked_key",
            "state",
            "sent",
            "ok",
            "rate_limited",
            "errors",
        }
        inputs = {r[1] for r in conn.execute("PRAGMA table_info(row_inputs)")}
        assert inputs == {"idx", "data", "body", "est_tokens", "row_model", "custom_id"}
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


def test_migrate_stops_at_upto(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "j.sqlite", isolation_level=None)
    try:
        assert migrate(conn, upto=1) == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        assert [r[0] for r in conn.execute(tables)] == ["meta", "rows", "sessions"]
        assert migrate(conn, upto=1) == 1
        assert migrate(conn, upto=2) == 2
        assert [r[0] for r in conn.execute(tables)] == ["meta", "row_inputs", "rows", "sessions"]
        assert migrate(conn, upto=3) == 3
        assert [r[0] for r in conn.execute(tables)] == [
            "meta",
            "row_inputs",
            "rows",
            "session_keys",
            "sessions",
        ]
        assert migrate(conn) == SCHEMA_VERSION == 4
        assert "batches" in {r[0] for r in conn.execute(tables)}
    finally:
        conn.close()


# -- a journal from schema 1 ------------------------------------------------------------------


def make_v1_journal(path: Path) -> None:
    """Write a journal as a schema-1 squall left it: 5 rows, row 1 answered, run meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode = WAL")
        assert migrate(conn, upto=1) == 1
        conn.executemany("INSERT INTO rows (idx, line, fingerprint) VALUES (?, ?, ?)", rows(5))
        conn.execute(
            f"UPDATE rows SET state = {int(RowState.DONE)}, response = 'old answer', "
            "prompt_tokens = 3, completion_tokens = 4, endpoint = 'a', model = 'm', "
            "attempts = 1, sent_count = 1, updated_at = 1.0 WHERE idx = 1"
        )
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("settings", '{"model": "m"}'),
                ("input_name", "in.jsonl"),
                ("created_at", "1.0"),
                ("models", '{"a": "m"}'),
                ("prices", '{"m": {"input": 1.0, "output": 2.0}}'),
                ("last_stop_reason", "max cost"),
            ],
        )
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_schema_1_journal_reads_read_only_without_migrating(path: Path) -> None:
    make_v1_journal(path)
    with Journal.open(path, read_only=True) as j:
        assert j.schema_version == 1
        stats = j.statistics()
        assert (stats.total, stats.done, stats.pending) == (5, 1, 4)
        assert stats.tokens_by_model["m"].prompt_tokens == 3
        assert stats.input_name == "in.jsonl" and stats.settings == {"model": "m"}
        results = list(j.iter_results())
        assert [r.index for r in results] == [0, 1, 2, 3, 4]
        assert results[1].response == "old answer"
        out = list(j.iter_output())
        assert [(o.index, o.data) for o in out] == [(i, None) for i in range(5)]
        assert out[1].result.response == "old answer"
        assert list(j.iter_todo()) == [0, 2, 3, 4]
        with pytest.raises(JournalError, match="older squall and holds no requests"):
            next(j.iter_todo_requests())
        meta = j.run_meta()
        assert meta.models == {"a": "m"} and meta.last_stop_reason == "max cost"
    assert user_version(path) == 1  # a reader changes nothing


def test_schema_1_journal_migrates_when_opened_for_a_run(path: Path) -> None:
    make_v1_journal(path)
    with Journal.open(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        assert j.statistics().done == 1
        # Its rows have no stored requests yet: said before anything is sent.
        with pytest.raises(JournalError, match=r"no request for row 0 \(line 2\).*Rerun"):
            next(j.iter_todo_requests())
        # Ingesting the same input again stores them, the answered row's data too.
        report = j.ingest(full_rows(5))
        assert (report.total, report.new, report.refreshed, report.done) == (5, 0, 5, 1)
        assert [r.index for r in j.iter_todo_requests()] == [0, 2, 3, 4]
        out = list(j.iter_output())
        assert all(o.data is not None for o in out)
        assert out[1].result.state == RowState.DONE
        assert out[1].result.response == "old answer"  # never overwritten
        assert j.run_meta().prices["m"].output == 2.0
    assert user_version(path) == SCHEMA_VERSION
