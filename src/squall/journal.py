"""The journal: a SQLite file (WAL mode) that keeps every row's state, so no paid work is lost.

Each state change is one committed transaction, unless the journal is opened with
`group_commits=True`: then row changes (`mark_sent`, `record_*`) join one open transaction
until `commit()`, which the engine calls once per event-loop turn, before any request marked
sent in that turn leaves (the journal's CPU per row falls from ~28 to ~6 us). With
`synchronous=NORMAL` (the default) a committed row survives `kill -9` of the process;
`sync="full"` also survives a power cut, at the price of one fsync per commit. A row whose
change was not committed yet when the process died is found as it was before it: an answer
that arrived in the turn of a `kill -9` counts, like any request in flight, as SENT.

A row's life (see `squall.records.RowState`)::

                 ingest
                   |
                   v
              +---------+   mark_sent    +------+   record_success   +------+
              | PENDING | -------------> | SENT | -----------------> | DONE |  final
              +---------+                +------+                    +------+
                   ^      record_retry     |  |
                   +-----------------------+  | record_failure
                                              v
                                         +--------+
                                         | FAILED | --mark_sent--> SENT, when iter_todo
                                         +--------+   gives it again (retryable, or
                                                      retry_failed=True)

- A row found SENT when a journal is opened was in flight when a run died: it may have been
  billed. `iter_todo` gives it again; `in_flight_at_open()` counts such rows.
- A DONE row is final: every write refuses to touch it, so an answer is never overwritten.
- PENDING rows may carry the last error of a retry; FAILED rows carry the final one.

One thread uses a `Journal` at a time (it is opened with `check_same_thread=False` so that
the thread may change, e.g. a worker thread under Jupyter). One writing process per journal:
`Journal.open` takes an exclusive lock on `PATH-lock`; a second run on the same journal gets
a `JournalError` instead of sending every row twice. API keys are never stored: endpoints
are recorded by name only.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any, Literal

from .errors import InputChangedError, JournalError
from .records import Completion, ErrorInfo, FailureExamples, RowResult, RowState

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no writer lock, one run at a time by hand
    fcntl = None  # type: ignore[assignment]  # the lock is skipped when None

APPLICATION_ID = 0x5351414C
"""`PRAGMA application_id` of a squall journal ("SQAL"): how `open` and `discard` know one."""

SessionOutcome = Literal["completed", "interrupted", "stopped"]

_PENDING, _SENT, _DONE, _FAILED = (int(s) for s in RowState)
_STATES = tuple(RowState)  # by value: indexing is cheaper than RowState(n) on every row

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
)
"""Schema changes, numbered from 1 without gaps; `PRAGMA user_version` is the last applied."""

SCHEMA_VERSION = MIGRATIONS[-1][0]

_CHUNK = 5000  # rows per ingest transaction and per iter_todo/iter_results page
_RESERVED_META = frozenset(
    {"settings_fingerprint", "settings", "input_name", "created_at", "row_fingerprint"}
)
_OUTCOMES = frozenset({"completed", "interrupted", "stopped"})

# Hot-path SQL, as module constants so sqlite3's statement cache always hits.
_MARK_SENT = (
    f"UPDATE rows SET state = {_SENT}, sent_count = sent_count + 1, updated_at = ? "
    f"WHERE idx = ? AND state != {_DONE}"
)


def _success_sql(request_id: bool, raw: bool) -> str:
    # Variants that write NULL in the SQL for an absent request id or raw body: sqlite3 binds
    # a None parameter through its adapter lookup, two failed attribute lookups that cost
    # more than the rest of the binding.
    return (
        f"UPDATE rows SET state = {_DONE}, response = ?, finish_reason = ?, prompt_tokens = ?, "
        "completion_tokens = ?, latency_s = ?, attempts = ?, endpoint = ?, model = ?, "
        f"request_id = {'?' if request_id else 'NULL'}, raw = {'?' if raw else 'NULL'}, "
        "error_type = NULL, error_status = NULL, error_message = NULL, "
        f"retryable = 0, updated_at = ? WHERE idx = ? AND state != {_DONE}"
    )


_SUCCESS = {(rid, raw): _success_sql(rid, raw) for rid in (False, True) for raw in (False, True)}
"""By (has a request id, has a raw body)."""
_RETRY = (
    f"UPDATE rows SET state = {_PENDING}, error_type = ?, error_status = ?, error_message = ?, "
    f"updated_at = ? WHERE idx = ? AND state != {_DONE}"
)
_FAILURE = (
    f"UPDATE rows SET state = {_FAILED}, error_type = ?, error_status = ?, error_message = ?, "
    "attempts = ?, endpoint = ?, retryable = ?, updated_at = ? "
    f"WHERE idx = ? AND state != {_DONE}"
)
_RESULT_COLUMNS = (
    "idx, state, response, error_type, error_status, error_message, finish_reason, "
    "prompt_tokens, completion_tokens, latency_s, attempts, endpoint, raw, sent_count"
)


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What `Journal.ingest` found: the input's rows by state, and how many were new."""

    total: int
    new: int
    done: int
    failed: int
    pending: int
    """Rows never sent or sent back for a retry (PENDING)."""
    in_flight: int
    """Rows left SENT by a run that died: they may have been billed and will be sent again."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Answered rows and their tokens, for one endpoint or model."""

    rows: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One run over the journal; `outcome` None means it is running or its process died."""

    id: int
    started_at: float
    ended_at: float | None
    outcome: str | None
    pid: int


@dataclass(frozen=True, slots=True)
class JournalStats:
    """A snapshot of the journal, for `squall status` and the end-of-run summary."""

    total: int
    pending: int
    sent: int
    """Rows SENT now: in flight, or (when no run is live) in flight when a run died."""
    done: int
    failed: int
    in_flight_at_open: int
    failures: dict[str, FailureExamples]
    """FAILED rows by error type: count and the first 5 row indices."""
    requests_sent: int
    prompt_tokens: int
    completion_tokens: int
    tokens_by_endpoint: dict[str, TokenUsage]
    tokens_by_model: dict[str, TokenUsage]
    first_activity: float | None
    last_activity: float | None
    wall_s: float
    """Seconds spent in runs; a run that died counts until its last recorded change."""
    settings: dict[str, Any]
    input_name: str | None
    created_at: float | None
    sessions: tuple[SessionRecord, ...] = field(default=())


class Journal:
    """A squall journal file, open for one run (or read-only, for `squall status`)."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        lock: IO[bytes] | None,
        in_flight: int,
        *,
        group_commits: bool = False,
    ) -> None:
        """Use `Journal.open`: it creates, checks and migrates the file."""
        self.path = path
        self._conn = conn
        self._lock = lock
        self._in_flight_at_open = in_flight
        self._session: int | None = None
        self._group = group_commits
        # One cursor for the per-row changes: conn.execute() makes a new one per statement.
        self._cursor = conn.cursor()

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        sync: Literal["normal", "full"] = "normal",
        read_only: bool = False,
        group_commits: bool = False,
    ) -> Journal:
        """Return the journal at `path`, created (with its folders) if missing.

        Args:
            path: the journal file.
            sync: "normal" survives a killed process; "full" also a power cut (slower).
            read_only: for looking only (`squall status`), also while a run writes to it:
                takes no lock, creates and migrates nothing.
            group_commits: row changes stay in one open transaction until `commit()` (the
                caller must commit; every other write and `close()` commit first).

        Raises:
            JournalError: the file is not a squall journal, is corrupt, comes from a newer
                squall, or another squall run is using it.
        """
        path = Path(path)
        if read_only and not path.exists():
            raise JournalError(f"no journal at {path}: check the path")
        lock = None if read_only else _take_writer_lock(path)
        try:
            conn = _connect(path, sync=sync, read_only=read_only)
            try:
                in_flight = conn.execute(
                    f"SELECT COUNT(*) FROM rows WHERE state = {_SENT}"
                ).fetchone()[0]
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        return cls(path, conn, lock, int(in_flight), group_commits=group_commits and not read_only)

    def close(self) -> None:
        """Commit, close the file (WAL checkpointed) and release the writer lock; safe to call
        twice."""
        try:
            self.commit()
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # -- settings and input ----------------------------------------------------------------

    def check_settings(
        self,
        fingerprint: str,
        described: Mapping[str, Any],
        *,
        input_name: str,
        row_fingerprint: str = "1",
    ) -> str:
        """Store the run's settings on first use; later, check they are the same.

        Args:
            fingerprint: a hash of every setting that changes the answers.
            described: the same settings, readable (JSON-able), to say what changed.
            input_name: the input file's name, kept for messages and `squall status`.
            row_fingerprint: the scheme of the row fingerprints `ingest` will be given, kept
                on first use.

        Returns:
            The row fingerprint scheme of this journal: `row_fingerprint` for a new one, the
            scheme it was made with otherwise ("1" for journals that recorded none).

        Raises:
            InputChangedError: the settings differ from those the journal was made with.
        """
        described_json = json.dumps(dict(described), sort_keys=True, default=str)
        old_fp = self.get_meta("settings_fingerprint")
        if old_fp is None:
            self._put_meta(
                {
                    "settings_fingerprint": fingerprint,
                    "settings": described_json,
                    "input_name": input_name,
                    "row_fingerprint": row_fingerprint,
                }
            )
            return row_fingerprint
        scheme = self.get_meta("row_fingerprint") or "1"
        if old_fp == fingerprint:
            return scheme
        old = json.loads(self.get_meta("settings") or "{}")
        new = json.loads(described_json)
        changes = [
            f"{key}: {_short(old.get(key, '<unset>'))} -> {_short(new.get(key, '<unset>'))}"
            for key in sorted(set(old) | set(new))
            if old.get(key, "<unset>") != new.get(key, "<unset>")
        ] or [f"settings fingerprint: {old_fp} -> {fingerprint}"]
        raise InputChangedError(
            f"the settings changed since the journal {self.path} was made "
            f"({'; '.join(changes)}). Its answers were made with the old settings. "
            f"Rerun with --restart to discard the journal and start fresh, or with "
            f"--journal NEW.sqlite to keep it."
        )

    def ingest(self, rows: Iterable[tuple[int, int, str]]) -> IngestReport:
        """Add the input's unseen rows as PENDING, after checking the known ones are unchanged.

        Streams: rows are handled in chunks of 5000, so memory stays constant.

        Args:
            rows: (index, line, fingerprint) for every input row, in input order (0, 1, 2...).

        Raises:
            InputChangedError: a known row differs (`row` is the first one), or the input now
                has fewer rows; nothing is inserted then.
            JournalError: the indices do not run 0, 1, 2, ...
        """
        self.commit()
        known = self._count()
        expected = 0
        new = 0
        source = iter(rows)
        try:
            while chunk := list(islice(source, _CHUNK)):
                # Whole-list comparisons run in C: ingest is per row, so it must stay cheap.
                if [r[0] for r in chunk] != list(range(expected, expected + len(chunk))):
                    at, bad = next((i, r[0]) for i, r in enumerate(chunk, expected) if r[0] != i)
                    raise JournalError(
                        f"ingest got row index {bad} where {at} was expected: "
                        "rows must come in input order, numbered from 0"
                    )
                expected += len(chunk)
                new += self._ingest_chunk(chunk, known)
        except sqlite3.Error as exc:
            raise _journal_error(exc, self.path, "add the input's rows") from exc
        if expected < known:
            line = self._conn.execute("SELECT line FROM rows WHERE idx = ?", (expected,))
            raise self._changed(
                expected,
                line.fetchone()[0],
                f"the input now has {expected} rows but the journal holds {known}",
            )
        counts = self._state_counts()
        return IngestReport(
            total=sum(counts.values()),
            new=new,
            done=counts[_DONE],
            failed=counts[_FAILED],
            pending=counts[_PENDING],
            in_flight=counts[_SENT],
        )

    def _ingest_chunk(self, chunk: list[tuple[int, int, str]], known: int) -> int:
        # The journal holds rows 0..known-1, and input rows come in index order, so every
        # known row is compared before the first new one is inserted: a changed input
        # inserts nothing.
        first = chunk[0][0]
        if first < known:
            compared = chunk[: known - first]
            stored = [
                fp
                for (fp,) in self._conn.execute(
                    "SELECT fingerprint FROM rows WHERE idx BETWEEN ? AND ? ORDER BY idx",
                    (first, compared[-1][0]),
                )
            ]
            if [r[2] for r in compared] != stored:
                # A row missing from the journal (it never should be) counts as changed.
                index, line, _ = next(
                    (r for r, old in zip(compared, stored, strict=False) if r[2] != old),
                    compared[min(len(stored), len(compared) - 1)],
                )
                raise self._changed(index, line, "it differs from the row the journal recorded")
        fresh = chunk[known - first :] if first < known else chunk
        if fresh:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT INTO rows (idx, line, fingerprint) VALUES (?, ?, ?)", fresh
                )
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite rolls back by itself on some errors
                    self._conn.execute("ROLLBACK")
                raise
        return len(fresh)

    def _changed(self, index: int, line: int, why: str) -> InputChangedError:
        name = self.get_meta("input_name") or "the input"
        return InputChangedError(
            f"{name} line {line} (row {index}): {why}: the input changed since the journal "
            f"{self.path} was made. Rerun with --restart to discard the journal and start "
            f"fresh, or with --journal NEW.sqlite to keep it.",
            row=index,
        )

    # -- the run ---------------------------------------------------------------------------

    def iter_todo(self, *, retry_failed: bool = False) -> Iterator[int]:
        """Yield the indices of rows to send, ascending, read in pages of 5000.

        These are PENDING rows, SENT rows (in flight when a run died), FAILED rows whose last
        error was retryable (retries ran out), and with `retry_failed` every FAILED row. Safe
        to write to the journal while iterating.
        """
        failed = "" if retry_failed else " AND retryable = 1"
        sql = (
            f"SELECT idx FROM rows WHERE idx > ? AND (state IN ({_PENDING}, {_SENT}) "
            f"OR (state = {_FAILED}{failed})) ORDER BY idx LIMIT {_CHUNK}"
        )
        last = -1
        while True:
            page = self._read(sql, (last,), "list the rows to send")
            if not page:
                return
            for (index,) in page:
                yield index
            last = page[-1][0]

    def mark_sent(self, index: int) -> None:
        """Record that a request for row `index` is leaving: state SENT, one more sent.

        Raises:
            JournalError: the row is DONE or unknown, or the file cannot be written.
        """
        self._change(_MARK_SENT, (time.time(), index), index, "mark a request sent")

    def record_success(
        self,
        index: int,
        completion: Completion,
        *,
        latency_s: float,
        attempts: int,
        endpoint: str,
        model: str | None = None,
    ) -> None:
        """Record row `index`'s answer: state DONE, final.

        Args:
            index: the row.
            completion: the parsed answer; its `raw` body is kept when set.
            latency_s: seconds the successful request took.
            attempts: requests made for this row in this run, the successful one included.
            endpoint: the endpoint's name (never a key).
            model: the model that answered, for tokens by model.

        Raises:
            JournalError: the row is already DONE or unknown, or the file cannot be written.
        """
        rid, raw = completion.request_id, completion.raw
        params: tuple[object, ...] = (
            completion.text,
            completion.finish_reason,
            completion.prompt_tokens,
            completion.completion_tokens,
            latency_s,
            attempts,
            endpoint,
            model,
            *((rid,) if rid is not None else ()),
            *((raw,) if raw is not None else ()),
            time.time(),
            index,
        )
        self._change(_SUCCESS[rid is not None, raw is not None], params, index, "record an answer")

    def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Send row `index` back to PENDING after a failed request, keeping the error.

        Raises:
            JournalError: the row is DONE or unknown, or the file cannot be written.
        """
        params = (error.type, error.status, error.message, time.time(), index)
        self._change(_RETRY, params, index, "record a retry")

    def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None:
        """Record that row `index` failed for good in this run: state FAILED.

        Args:
            index: the row.
            error: the last error.
            attempts: requests made for this row in this run.
            endpoint: the name of the endpoint that gave the last error, if any.
            retryable: the error was worth retrying (retries ran out): a rerun sends it again.

        Raises:
            JournalError: the row is DONE or unknown, or the file cannot be written.
        """
        params = (
            error.type,
            error.status,
            error.message,
            attempts,
            endpoint,
            int(retryable),
            time.time(),
            index,
        )
        self._change(_FAILURE, params, index, "record a failure")

    def commit(self) -> None:
        """Commit the row changes a `group_commits` journal holds open (none: nothing to do).

        Raises:
            JournalError: the file cannot be written (the changes are rolled back).
        """
        conn = self._conn
        try:
            if not conn.in_transaction:
                return
        except sqlite3.ProgrammingError:  # closed already: close() called twice
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _journal_error(exc, self.path, "commit the latest answers") from exc

    def _change(self, sql: str, params: tuple[object, ...], index: int, action: str) -> None:
        try:
            if self._group and not self._conn.in_transaction:
                self._conn.execute("BEGIN")
            changed = self._cursor.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _journal_error(exc, self.path, f"{action} for row {index}") from exc
        if changed == 1:
            return
        row = self._conn.execute("SELECT state FROM rows WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise JournalError(f"cannot {action} for row {index}: it is not in the journal")
        raise JournalError(
            f"cannot {action} for row {index}: it is {RowState(row[0]).name} already, and a "
            "DONE row is final"
        )

    def iter_results(self) -> Iterator[RowResult]:
        """Yield every row's result in index order, read in pages of 5000 (for the output)."""
        sql = f"SELECT {_RESULT_COLUMNS} FROM rows WHERE idx > ? ORDER BY idx LIMIT {_CHUNK}"
        last = -1
        while True:
            page = self._read(sql, (last,), "read the results")
            if not page:
                return
            for r in page:
                # Positional, in RowResult's field order: keywords cost a third more per row.
                yield RowResult(
                    r[0],
                    _STATES[r[1]],
                    r[2],
                    None if r[3] is None else ErrorInfo(r[3], r[4], r[5] or ""),
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                    r[12],
                    r[13],
                )
            last = page[-1][0]

    # -- sessions and meta -----------------------------------------------------------------

    def begin_session(self) -> int:
        """Record that a run starts now; return its session id."""
        self.commit()
        try:
            cur = self._conn.execute(
                "INSERT INTO sessions (started_at, pid) VALUES (?, ?)", (time.time(), os.getpid())
            )
        except sqlite3.Error as exc:
            raise _journal_error(exc, self.path, "record the run's start") from exc
        self._session = cur.lastrowid
        return int(cur.lastrowid or 0)

    def end_session(self, outcome: SessionOutcome) -> None:
        """Record how the run begun by `begin_session` ended.

        Raises:
            JournalError: no session was begun, or `outcome` is not a known one.
        """
        if self._session is None:
            raise JournalError("end_session() without begin_session()")
        if outcome not in _OUTCOMES:
            raise JournalError(f"unknown session outcome {outcome!r}: use one of {_OUTCOMES}")
        self.commit()
        try:
            self._conn.execute(
                "UPDATE sessions SET ended_at = ?, outcome = ? WHERE id = ?",
                (time.time(), outcome, self._session),
            )
        except sqlite3.Error as exc:
            raise _journal_error(exc, self.path, "record the run's end") from exc
        self._session = None

    def set_meta(self, key: str, value: str) -> None:
        """Store a free text value under `key` (e.g. JSON of a price table), replacing any.

        Raises:
            JournalError: `key` is one the journal keeps itself.
        """
        if key in _RESERVED_META:
            raise JournalError(f"meta key {key!r} is the journal's own: pick another name")
        self._put_meta({key: value})

    def get_meta(self, key: str) -> str | None:
        """Return the value stored under `key` (the journal's own keys too), or None."""
        row = self._read("SELECT value FROM meta WHERE key = ?", (key,), "read meta")
        return str(row[0][0]) if row else None

    def _put_meta(self, items: Mapping[str, str]) -> None:
        self.commit()
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", items.items()
            )
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise _journal_error(exc, self.path, "write meta") from exc

    # -- accounts --------------------------------------------------------------------------

    def in_flight_at_open(self) -> int:
        """Return how many rows were SENT when the journal was opened: a run died with them
        in flight, and they may have been billed."""
        return self._in_flight_at_open

    def in_use_elsewhere(self) -> bool:
        """Return whether another process holds the journal's writer lock (a run is live)."""
        if self._lock is not None or fcntl is None:
            return False
        lock_path = _lock_path(self.path)
        if not lock_path.exists():
            return False
        with open(lock_path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False

    def statistics(self) -> JournalStats:
        """Return a snapshot of the whole journal (scans the table: for status and summaries,
        not for every request)."""
        counts = self._state_counts()
        sums = self._read(
            "SELECT COALESCE(SUM(sent_count), 0), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), MIN(updated_at), MAX(updated_at) FROM rows",
            (),
            "read statistics",
        )[0]
        sessions = tuple(
            SessionRecord(*r)
            for r in self._read(
                "SELECT id, started_at, ended_at, outcome, pid FROM sessions ORDER BY id",
                (),
                "read sessions",
            )
        )
        starts = [t for t in (sums[3], *(s.started_at for s in sessions)) if t is not None]
        ends = [t for t in (sums[4], *(s.ended_at for s in sessions)) if t is not None]
        return JournalStats(
            total=sum(counts.values()),
            pending=counts[_PENDING],
            sent=counts[_SENT],
            done=counts[_DONE],
            failed=counts[_FAILED],
            in_flight_at_open=self._in_flight_at_open,
            failures=self._failures(),
            requests_sent=int(sums[0]),
            prompt_tokens=int(sums[1]),
            completion_tokens=int(sums[2]),
            tokens_by_endpoint=self._tokens_by("endpoint"),
            tokens_by_model=self._tokens_by("model"),
            first_activity=min(starts, default=None),
            last_activity=max(ends, default=None),
            wall_s=self._wall_s(sessions),
            settings=json.loads(self.get_meta("settings") or "{}"),
            input_name=self.get_meta("input_name"),
            created_at=_float_or_none(self.get_meta("created_at")),
            sessions=sessions,
        )

    def _state_counts(self) -> dict[int, int]:
        counts = dict.fromkeys((_PENDING, _SENT, _DONE, _FAILED), 0)
        for state, n in self._read(
            "SELECT state, COUNT(*) FROM rows GROUP BY state", (), "count rows"
        ):
            counts[state] = n
        return counts

    def _count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM rows", (), "count rows")[0][0])

    def _failures(self) -> dict[str, FailureExamples]:
        out: dict[str, FailureExamples] = {}
        for kind, n in self._read(
            f"SELECT COALESCE(error_type, 'unknown'), COUNT(*) FROM rows WHERE state = {_FAILED} "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
            (),
            "read failures",
        ):
            examples = self._read(
                f"SELECT idx FROM rows WHERE state = {_FAILED} "
                "AND COALESCE(error_type, 'unknown') = ? ORDER BY idx LIMIT 5",
                (kind,),
                "read failures",
            )
            out[kind] = FailureExamples(count=n, rows=[r[0] for r in examples])
        return out

    def _tokens_by(self, column: Literal["endpoint", "model"]) -> dict[str, TokenUsage]:
        rows = self._read(
            f"SELECT {column}, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            f"COALESCE(SUM(completion_tokens), 0) FROM rows "
            f"WHERE state = {_DONE} AND {column} IS NOT NULL GROUP BY {column} ORDER BY {column}",
            (),
            "read token counts",
        )
        return {name: TokenUsage(n, int(p), int(c)) for name, n, p, c in rows}

    def _wall_s(self, sessions: tuple[SessionRecord, ...]) -> float:
        total = 0.0
        for i, s in enumerate(sessions):
            end = s.ended_at
            if end is None:
                # Running now, or the process died: count until its last recorded change.
                until = sessions[i + 1].started_at if i + 1 < len(sessions) else None
                row = self._read(
                    "SELECT MAX(updated_at) FROM rows WHERE updated_at >= ? "
                    "AND (? IS NULL OR updated_at < ?)",
                    (s.started_at, until, until),
                    "read activity",
                )
                end = row[0][0] if row[0][0] is not None else s.started_at
            total += max(0.0, end - s.started_at)
        return total

    def _read(self, sql: str, params: tuple[Any, ...], action: str) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _journal_error(exc, self.path, action) from exc


def discard(path: str | Path) -> None:
    """Delete the journal at `path` with its -wal, -shm and -lock files (for `--restart`).

    Does nothing if there is no file. Refuses to delete a file that is not a squall journal.

    Raises:
        JournalError: the file is not a squall journal, or a run is using it.
    """
    path = Path(path)
    leftovers = (Path(f"{path}-wal"), Path(f"{path}-shm"), _lock_path(path))
    if path.exists() and path.stat().st_size > 0:
        lock = _take_writer_lock(path)
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


def _connect(path: Path, *, sync: str, read_only: bool) -> sqlite3.Connection:
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the folder for the journal {path}: {exc}") from exc
    # isolation_level=None: every statement commits on its own unless we say BEGIN.
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    except sqlite3.Error as exc:
        raise _journal_error(exc, path, "open the file") from exc
    try:
        _prepare(conn, path, sync=sync, read_only=read_only)
    except sqlite3.Error as exc:
        conn.close()
        raise _journal_error(exc, path, "open the file") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, *, sync: str, read_only: bool) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
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
        if fresh or version < SCHEMA_VERSION:
            raise JournalError(
                f"the journal {path} is empty or from an older squall: open it for a run "
                "first (that upgrades it)"
            )
        conn.execute("PRAGMA query_only = ON")
        return
    if fresh:
        # Set before WAL so the id sits in the file's header on disk right away.
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
        raise JournalError(f"cannot put the journal {path} in WAL mode: use a local disk")
    conn.execute(f"PRAGMA synchronous = {'FULL' if sync == 'full' else 'NORMAL'}")
    migrate(conn)
    if fresh:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (str(time.time()),)
        )


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations `conn`'s database lacks, each in its own transaction; return the
    schema version reached."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    for number, sql in MIGRATIONS:
        if number <= version:
            continue
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = number
    return version


def _lock_path(path: Path) -> Path:
    return Path(f"{path}-lock")


def _take_writer_lock(path: Path) -> IO[bytes]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(_lock_path(path), "ab")  # noqa: SIM115 - held open until close()
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise JournalError(
                f"the journal {path} is in use by another squall run: wait for it to end, "
                "or pass another --journal path"
            ) from exc
    return lock


def _journal_error(exc: sqlite3.Error, path: Path, action: str) -> JournalError:
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


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _float_or_none(text: str | None) -> float | None:
    return None if text is None else float(text)
