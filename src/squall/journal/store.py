"""`Journal`: a journal file open for one run (or read-only).

Its row verbs, ingest, settings, sessions and meta. Reading is delegated to
`squall.journal.reader.JournalReader`.

See the package docstring (`squall.journal`) for the states a row goes through.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import InputChangedError, JournalError
from ..events import KeyStats
from ..records import Completion, ErrorInfo, RowResult, RowState
from .batches import BatchTable
from .changes import FAILURE, MARK_SENT, RETRY, SUCCESS
from .ingest import IngestItem, ingest_rows
from .lock import held_elsewhere, take_writer_lock
from .meta import RunMeta, put_meta
from .reader import JournalReader
from .rows import IngestReport, JournalStats, OutputRow, StoredRequest
from .schema import DONE, FAILED, PENDING, SENT, connect, journal_error
from .sessions import SessionOutcome, begin_session, end_session
from .settings import check_settings

_RESERVED_META = frozenset(
    {"settings_fingerprint", "settings", "input_name", "created_at", "row_fingerprint"}
)


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
        schema: int | None = None,
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
        if schema is None:
            schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        self._reader = JournalReader(conn, path, schema)
        self.batches = BatchTable(conn, path, self.commit, schema)
        """The provider's Batch API chunks of this journal (`squall.journal.batches`)."""

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
                takes no lock, creates and migrates nothing (an older schema is read as is).
            group_commits: row changes stay in one open transaction until `commit()` (the
                caller must commit; every other write and `close()` commit first).

        Raises:
            JournalError: the file is not a squall journal, is corrupt, comes from a newer
                squall, or another squall run is using it.
        """
        path = Path(path)
        if read_only and not path.exists():
            raise JournalError(f"no journal at {path}: check the path")
        lock = None if read_only else take_writer_lock(path)
        try:
            conn, schema = connect(path, sync=sync, read_only=read_only)
            try:
                in_flight = conn.execute(
                    f"SELECT COUNT(*) FROM rows WHERE state = {SENT}"
                ).fetchone()[0]
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        group = group_commits and not read_only
        return cls(path, conn, lock, int(in_flight), group_commits=group, schema=schema)

    def close(self) -> None:
        """Commit, close the file (WAL checkpointed) and release the writer lock.

        Safe to call twice.
        """
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

    @property
    def schema_version(self) -> int:
        """The file's schema version: the latest, unless an older file was opened read-only."""
        return self._reader.schema

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
        return check_settings(
            self.get_meta,
            self._put_meta,
            self.path,
            fingerprint,
            described,
            input_name=input_name,
            row_fingerprint=row_fingerprint,
        )

    def ingest(self, rows: Iterable[IngestItem]) -> IngestReport:
        """Add the input's unseen rows as PENDING, after checking the known ones are unchanged.

        Streams: rows are handled in chunks of 5000, so memory stays constant.

        Args:
            rows: every input row, in input order (0, 1, 2...): an `IngestRow` (with what
                sending and writing need), or an (index, line, fingerprint) tuple. A known
                row given again with its data or body, where the journal lacks them (an
                older squall ingested it), has them filled in; its state and answer stay.

        Raises:
            InputChangedError: a known row differs (`row` is the first one), or the input now
                has fewer rows; nothing is inserted then.
            JournalError: the indices do not run 0, 1, 2, ...
        """
        self.commit()
        known = self._reader.count()
        try:
            seen, new, refreshed = ingest_rows(self._conn, rows, known, self._changed)
        except sqlite3.Error as exc:
            raise journal_error(exc, self.path, "add the input's rows") from exc
        if seen < known:
            line = self._conn.execute("SELECT line FROM rows WHERE idx = ?", (seen,))
            raise self._changed(
                seen,
                line.fetchone()[0],
                f"the input now has {seen} rows but the journal holds {known}",
            )
        counts = self._reader.state_counts()
        return IngestReport(
            total=sum(counts.values()),
            new=new,
            done=counts[DONE],
            failed=counts[FAILED],
            pending=counts[PENDING],
            in_flight=counts[SENT],
            refreshed=refreshed,
        )

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
        return self._reader.iter_todo(retry_failed=retry_failed)

    def iter_todo_requests(self, *, retry_failed: bool = False) -> Iterator[StoredRequest]:
        """Yield the rows `iter_todo` gives, with the requests stored for them at ingest.

        So the sender needs no input file. Same rows, same order, same paging.

        Raises:
            JournalError: before anything is yielded, if a row to send has no stored request
                (an older squall ingested it: rerun, and ingest stores it), or the file is a
                schema-1 journal opened read-only.
        """
        return self._reader.iter_todo_requests(retry_failed=retry_failed)

    def mark_sent(self, index: int) -> None:
        """Record that a request for row `index` is leaving: state SENT, one more sent.

        Raises:
            JournalError: the row is DONE or unknown, or the file cannot be written.
        """
        self._change(MARK_SENT, (time.time(), index), index, "mark a request sent")

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
        self._change(SUCCESS[rid is not None, raw is not None], params, index, "record an answer")

    def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Send row `index` back to PENDING after a failed request, keeping the error.

        Raises:
            JournalError: the row is DONE or unknown, or the file cannot be written.
        """
        params = (error.type, error.status, error.message, time.time(), index)
        self._change(RETRY, params, index, "record a retry")

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
        self._change(FAILURE, params, index, "record a failure")

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
            raise journal_error(exc, self.path, "commit the latest answers") from exc

    def _change(self, sql: str, params: tuple[object, ...], index: int, action: str) -> None:
        try:
            if self._group and not self._conn.in_transaction:
                self._conn.execute("BEGIN")
            changed = self._cursor.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise journal_error(exc, self.path, f"{action} for row {index}") from exc
        if changed == 1:
            return
        row = self._conn.execute("SELECT state FROM rows WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise JournalError(f"cannot {action} for row {index}: it is not in the journal")
        raise JournalError(
            f"cannot {action} for row {index}: it is {RowState(row[0]).name} already, and a "
            "DONE row is final"
        )

    # -- reading -----------------------------------------------------------------------------

    def iter_results(self) -> Iterator[RowResult]:
        """Yield every row's result in index order, read in pages of 5000 (for the output)."""
        return self._reader.iter_results()

    def iter_output(self) -> Iterator[OutputRow]:
        """Yield every row in index order with its stored input fields and its result.

        `data` is None where none was stored. Read in pages of 5000: the merged output,
        written from the journal alone.
        """
        return self._reader.iter_output()

    def statistics(self) -> JournalStats:
        """Return a snapshot of the whole journal.

        It scans the table: for status and summaries, not for every request.
        """
        return self._reader.statistics(self._in_flight_at_open)

    def in_flight_at_open(self) -> int:
        """Return how many rows were SENT when the journal was opened.

        A run died with them in flight, and they may have been billed.
        """
        return self._in_flight_at_open

    def in_use_elsewhere(self) -> bool:
        """Return whether another process holds the journal's writer lock (a run is live)."""
        return self._lock is None and held_elsewhere(self.path)

    # -- sessions and meta -----------------------------------------------------------------

    def begin_session(self) -> int:
        """Record that a run starts now; return its session id."""
        self.commit()
        self._session = begin_session(self._conn, self.path)
        return self._session

    def end_session(self, outcome: SessionOutcome, keys: Sequence[KeyStats] = ()) -> None:
        """Record how the run begun by `begin_session` ended, and its keys' counters.

        Args:
            outcome: how the run ended.
            keys: every key's snapshot at the end (`EndpointPool.statistics()`): their
                counters are this session's share of the account over all sessions
                (`statistics().keys`). Their labels and masked forms are stored, never a key.

        Raises:
            JournalError: no session was begun, or `outcome` is not a known one.
        """
        if self._session is None:
            raise JournalError("end_session() without begin_session()")
        self.commit()
        end_session(self._conn, self.path, self._session, outcome, keys)
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
        return self._reader.get_meta(key)

    def write_run_meta(self, meta: RunMeta) -> None:
        """Store the run's models, prices and stop reason (every field of `meta`), at once."""
        self._put_meta(meta.to_meta())

    def run_meta(self) -> RunMeta:
        """Return what the runs recorded about themselves (defaults where nothing was).

        Raises:
            JournalError: a stored value is not what squall writes.
        """
        return RunMeta.from_meta(self.get_meta)

    def _put_meta(self, items: Mapping[str, str]) -> None:
        self.commit()
        put_meta(self._conn, self.path, items)
