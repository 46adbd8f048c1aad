"""The journal file itself: its DDL, numbered migrations, and opening a connection to it.

`connect` checks that a file is a squall journal (`PRAGMA application_id`), refuses one from a
newer squall, sets the pragmas (WAL, synchronous) and migrates it to `SCHEMA_VERSION`. A file
opened read-only is never migrated: it is read at the schema it has (what it lacks reads as
none: see `squall.journal.reader`).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import JournalError
from ..records import RowState
from .lock import lock_path, take_writer_lock

APPLICATION_ID = 0x5351414C
"""`PRAGMA application_id` of a squall journal ("SQAL"): how `open` and `discard` know one."""

PENDING, SENT, DONE, FAILED = (int(s) for s in RowState)
STATES = tuple(RowState)  # by value: indexing is cheaper than RowState(n) on every row

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE rows (
            idx INTEGER PRIMARY KEY,        -- 0-based row index in the input
            line INTEGER NOT NULL,          -- 1-based line in the input, for messages
            fingerprint TEXT NOT NULL,      -- hash of row + request, to spot a changed input
            state INTEGER NOT NULL DEFAULT 0,
            sent_count INTEGER NOT NULL DEFAULT 0,  -- requests that left for this row
            attempts INTEGER NOT NULL DEFAULT 0,
            response TEXT,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            endpoint TEXT,                  -- the endpoint's name, never its key
            model TEXT,
            request_id TEXT,
            raw TEXT,                       -- full response body, for batch-format output
            error_type TEXT,
            error_status INTEGER,
            error_message TEXT,
            retryable INTEGER NOT NULL DEFAULT 0,  -- FAILED after exhausting retries
            updated_at REAL                 -- wall time of the last change
        );
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            ended_at REAL,
            outcome TEXT,                   -- NULL: still running, or the process died
            pid INTEGER NOT NULL
        );
        """,
    ),
    (
        # What sending and writing need, so both read the journal and not the input again.
        # A table of its own: in `rows`, every mark_sent and record_success rewrites the
        # whole record, and a row's body and data (often kilobytes, on overflow pages) made
        # that several times slower. Rows ingested by schema 1 (or as bare tuples) have none
        # until a rerun ingests them again.
        2,
        """
        CREATE TABLE row_inputs (
            idx INTEGER PRIMARY KEY,        -- the row's idx in rows
            data TEXT,                      -- the row's input fields, JSON
            body TEXT,                      -- the request body without "model", JSON
            est_tokens INTEGER,             -- estimated prompt tokens
            row_model TEXT,                 -- the model the row names (batch lines)
            custom_id TEXT                  -- a batch line's custom_id
        );
        """,
    ),
    (
        # The account over every session: the retries each row took (counted in the same
        # UPDATE as the retry itself, so a killed run's count up to its last commit is kept),
        # and each key's counters as a session left them (written at the session's end).
        3,
        """
        ALTER TABLE rows ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE session_keys (
            session INTEGER NOT NULL,       -- sessions.id
            endpoint TEXT NOT NULL,         -- the endpoint's name
            label TEXT NOT NULL,            -- the key's id in the config, never the key
            masked_key TEXT NOT NULL,       -- as squall shows it: sk-...abcd
            state TEXT NOT NULL,            -- KeyState at the session's end
            sent INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            rate_limited INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            UNIQUE (session, endpoint, label)
        );
        """,
    ),
    (
        # The provider's Batch API (`squall.batchapi`): one record per batch file this journal
        # made ("chunk"), and on each row the live chunk that holds it. A row is given its
        # chunk in the same transaction that creates the chunk, before the file is written,
        # so no row is ever in two live batches; collecting a chunk clears it again.
        4,
        """
        ALTER TABLE rows ADD COLUMN batch_chunk INTEGER;  -- a live chunk holds the row
        CREATE INDEX rows_by_chunk ON rows (batch_chunk) WHERE batch_chunk IS NOT NULL;
        CREATE TABLE batches (
            chunk INTEGER PRIMARY KEY,      -- numbered from 1 in this journal
            endpoint TEXT NOT NULL,         -- the endpoint's name
            label TEXT NOT NULL,            -- the key's id in the config, never the key
            kind TEXT NOT NULL,             -- the batch url: /v1/chat/completions, ...
            rows INTEGER NOT NULL,
            bytes INTEGER,                  -- the input file's size, once written
            file_id TEXT,                   -- the uploaded input file
            batch_id TEXT,                  -- the provider's batch
            status TEXT NOT NULL,           -- assigned, uploaded, or the provider's status
            completed INTEGER NOT NULL DEFAULT 0,   -- request_counts as last polled
            failed INTEGER NOT NULL DEFAULT 0,
            output_file_id TEXT,
            error_file_id TEXT,
            errors TEXT,                    -- JSON list of the batch's own error messages
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            collected_at REAL               -- its lines are journaled: no longer live
        );
        """,
    ),
)
"""Schema changes, numbered from 1 without gaps; `PRAGMA user_version` is the last applied."""

SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrate(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Apply the migrations `conn`'s database lacks; return the schema version reached.

    Up to and including `upto` (default: all), each in its own transaction.
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, sql in MIGRATIONS:
        if number <= version:
            continue
        if upto is not None and number > upto:
            break
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = number
    return version


def connect(path: Path, *, sync: str, read_only: bool) -> tuple[sqlite3.Connection, int]:
    """Open the journal at `path`; return the connection and its schema version.

    The file is checked and (unless `read_only`) migrated.

    Raises:
        JournalError: the file is not a squall journal, is corrupt, comes from a newer squall,
            or (read-only) is empty.
    """
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the folder for the journal {path}: {exc}") from exc
    # isolation_level=None: every statement commits on its own unless we say BEGIN.
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise journal_error(exc, path, "open the file") from exc
    try:
        version = _prepare(conn, path, sync=sync, read_only=read_only)
    except sqlite3.Error as exc:
        conn.close()
        raise journal_error(exc, path, "open the file") from exc
    except BaseException:
        conn.close()
        raise
    return conn, version


def _prepare(conn: sqlite3.Connection, path: Path, *, sync: str, read_only: bool) -> int:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
    fresh = app_id == 0 and version == 0 and tables == 0
    if not fresh and app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is not a squall journal: pass another --journal path (squall creates the file)"
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} was written by a newer squall (schema {version}, this "
            f"squall knows {SCHEMA_VERSION}): upgrade squall"
        )
    if read_only:
        # An older schema is read as it is: a reader must not change a file a run may hold.
        if fresh or version < 1:
            raise JournalError(
                f"the journal {path} is empty or from an older squall: open it for a run "
                "first (that upgrades it)"
            )
        conn.execute("PRAGMA query_only = ON")
        return version
    if fresh:
        # Set before WAL so the id sits in the file's header on disk right away.
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise JournalError(f"cannot put the journal {path} in WAL mode: use a local disk")
    conn.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
    version = migrate(conn)
    if fresh:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (str(time.time()),)
        )
    return version


def discard(path: str | Path) -> None:
    """Delete the journal at `path` with its -wal, -shm and -lock files (for `--restart`).

    Does nothing if there is no file. Refuses to delete a file that is not a squall journal.

    Raises:
        JournalError: the file is not a squall journal, or a run is using it.
    """
    path = Path(path)
    leftovers = (Path(f"{path}-wal"), Path(f"{path}-shm"), lock_path(path))
    if path.exists() and path.stat().st_size > 0:
        lock = take_writer_lock(path)
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            except sqlite3.DatabaseError:
                app_id = None
            finally:
                conn.close()
            if app_id != APPLICATION_ID:
                raise JournalError(
                    f"{path} is not a squall journal, so --restart will not delete it: "
                    "check the --journal path"
                )
            path.unlink()
        finally:
            lock.close()
    else:
        path.unlink(missing_ok=True)
    for p in leftovers:
        p.unlink(missing_ok=True)


def read_all(conn: sqlite3.Connection, path: Path, sql: str, params: Any, action: str) -> list[Any]:
    """Run a query and return its rows; an SQLite error becomes a JournalError saying what."""
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise journal_error(exc, path, action) from exc


def journal_error(exc: sqlite3.Error, path: Path, action: str) -> JournalError:
    """Return the JournalError for an SQLite error met while doing `action`, with a hint."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        hint = "another process holds it: wait for it to end, or pass another --journal path"
    elif "full" in text:
        hint = "the disk is full: free space and rerun (committed rows are kept)"
    elif isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        hint = "the file is not a squall journal or is corrupt: pass another --journal path"
    elif "readonly" in text or "read-only" in text:
        hint = "the file cannot be written: check its permissions"
    elif "unable to open" in text:
        hint = "the path must be a file (or not exist yet) in a folder you can write"
    else:
        hint = "check the file and its disk"
    return JournalError(f"the journal {path}: cannot {action} ({text}): {hint}")
