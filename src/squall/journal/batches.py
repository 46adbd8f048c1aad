"""The journal's record of the provider's Batch API: chunks, their batches, their rows.

A chunk is one batch input file this journal made, and the batch created from it. Its life:

    assigned   its rows get the chunk (`assign`)
    uploaded   its file id is recorded (`set_file`)
    submitted  its batch id is recorded (`set_batch`), then the provider's statuses as
               polled (validating, in_progress, finalizing, completed...: `set_status`)
    collected  its lines are journaled and its rows released (`release`)

Every step is committed before the next call to the provider, which is what keeps a crash at
any point from paying twice: rows are given their chunk (`rows.batch_chunk`) in the
transaction that creates it, before the file is written, and rows that a live chunk holds are
never sent again, online or in another batch (`squall.journal.reader._todo`). A chunk whose
batch id was not recorded (the process died during the create call) is matched to the batch
by its metadata before a new one is made (`squall.batchapi`). Collecting a chunk journals its
answers and clears its rows' chunk in one transaction: a crash halfway collects it again.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError
from .rows import StoredRequest, json_value
from .schema import DONE, journal_error, read_all

ASSIGNED = "assigned"
"""A chunk's rows are chosen; its file may be written, but no upload was recorded."""
UPLOADED = "uploaded"
"""Its file is uploaded (file_id recorded); no batch is recorded yet."""
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""The provider's statuses of a batch that has ended."""

_COLUMNS = (
    "chunk, endpoint, label, kind, rows, bytes, file_id, batch_id, status, completed, "
    "failed, output_file_id, error_file_id, errors, created_at, updated_at, collected_at"
)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One chunk as the journal holds it (see the module docstring for its life).

    Attributes:
        chunk: its number in this journal, from 1.
        endpoint: the endpoint's name; label: the key's id in the config (never the key).
        kind: the batch url of its lines ("/v1/chat/completions").
        rows: how many rows it holds; bytes: its input file's size, once written.
        file_id, batch_id: the provider's ids, once recorded.
        status: "assigned", "uploaded", or the batch's status as last polled.
        completed, failed: the batch's request_counts as last polled.
        output_file_id, error_file_id: the files the batch wrote, once it ended.
        errors: the batch's own error messages (a failed validation).
        created_at, updated_at: wall times; collected_at: when its lines were journaled.
    """

    chunk: int
    endpoint: str
    label: str
    kind: str
    rows: int
    bytes: int | None
    file_id: str | None
    batch_id: str | None
    status: str
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    errors: tuple[str, ...]
    created_at: float
    updated_at: float
    collected_at: float | None

    @property
    def live(self) -> bool:
        """True until its lines are journaled: its rows are held by it."""
        return self.collected_at is None

    @property
    def ended(self) -> bool:
        """True once the provider's batch has ended (its files can be read)."""
        return self.status in TERMINAL


def _record(r: Sequence[object]) -> BatchRecord:
    errors = tuple(json.loads(str(r[13]))) if r[13] else ()
    return BatchRecord(
        int(r[0]),  # type: ignore[call-overload]
        str(r[1]),
        str(r[2]),
        str(r[3]),
        int(r[4]),  # type: ignore[call-overload]
        None if r[5] is None else int(r[5]),  # type: ignore[call-overload]
        None if r[6] is None else str(r[6]),
        None if r[7] is None else str(r[7]),
        str(r[8]),
        int(r[9]),  # type: ignore[call-overload]
        int(r[10]),  # type: ignore[call-overload]
        None if r[11] is None else str(r[11]),
        None if r[12] is None else str(r[12]),
        errors,
        float(r[14]),  # type: ignore[arg-type]
        float(r[15]),  # type: ignore[arg-type]
        None if r[16] is None else float(r[16]),  # type: ignore[arg-type]
    )


class BatchTable:
    """The Batch API's part of a journal open for a run (`Journal.batches`).

    Args:
        conn: the journal's connection.
        path: the journal file, for messages.
        commit: commits the journal's open row changes (every write here commits first).
        schema: the file's schema version (below 4 there are no batches to read).
    """

    def __init__(
        self, conn: sqlite3.Connection, path: Path, commit: Callable[[], None], schema: int
    ) -> None:
        self._conn = conn
        self._path = path
        self._commit = commit
        self._schema = schema

    def _write(self, action: str, statements: Sequence[tuple[str, Sequence[object]]]) -> None:
        """Run `statements` in one committed transaction."""
        self._commit()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise journal_error(exc, self._path, action) from exc

    def run_id(self) -> str:
        """Return this journal's id for the provider's batch metadata (made on first use).

        It names the journal's batches at the provider, so a batch this run created is told
        apart from every other, also from another journal's on the same account.
        """
        row = read_all(
            self._conn, self._path, "SELECT value FROM meta WHERE key = 'batch_run'", (), "read"
        )
        if row:
            return str(row[0][0])
        value = uuid.uuid4().hex[:16]
        self._write(
            "record the batch run's id",
            [("INSERT OR IGNORE INTO meta (key, value) VALUES ('batch_run', ?)", (value,))],
        )
        return self.run_id()

    def assign(self, rows: Sequence[int], *, endpoint: str, label: str, kind: str) -> int:
        """Make a chunk of `rows` (none may be in a live chunk); return its number.

        Committed before anything is written or sent for it.

        Raises:
            JournalError: a row is unknown, DONE, or held by a live chunk already.
        """
        if not rows:
            raise JournalError("a batch chunk needs at least one row")
        now = time.time()
        self._commit()
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO batches (endpoint, label, kind, rows, status, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (endpoint, label, kind, len(rows), ASSIGNED, now, now),
            )
            chunk = int(cur.lastrowid or 0)
            changed = conn.executemany(
                "UPDATE rows SET batch_chunk = ? WHERE idx = ? AND batch_chunk IS NULL "
                f"AND state != {DONE}",
                ((chunk, i) for i in rows),
            ).rowcount
            if changed != len(rows):
                conn.execute("ROLLBACK")
                raise JournalError(
                    f"cannot put {len(rows)} rows in a batch: {len(rows) - changed} of them are "
                    "done or in a live batch already (report this: squall never does that)"
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise journal_error(exc, self._path, "record a batch chunk") from exc
        return chunk

    def set_file(self, chunk: int, *, nbytes: int, file_id: str | None) -> None:
        """Record the chunk's file size and, once uploaded, its file id ("uploaded")."""
        status = "status" if file_id is None else f"'{UPLOADED}'"
        self._write(
            "record a batch file",
            [
                (
                    f"UPDATE batches SET bytes = ?, file_id = ?, status = {status}, "
                    "updated_at = ? WHERE chunk = ?",
                    (nbytes, file_id, time.time(), chunk),
                )
            ],
        )

    def set_batch(self, chunk: int, batch_id: str, status: str) -> None:
        """Record the batch made from the chunk: from now on it is submitted.

        Each of its rows counts one request sent (`rows.sent_count`), in the same transaction.
        """
        now = time.time()
        self._write(
            "record a batch",
            [
                (
                    "UPDATE batches SET batch_id = ?, status = ?, updated_at = ? WHERE chunk = ?",
                    (batch_id, status, now, chunk),
                ),
                (
                    "UPDATE rows SET sent_count = sent_count + 1, updated_at = ? "
                    "WHERE batch_chunk = ?",
                    (now, chunk),
                ),
            ],
        )

    def set_status(
        self,
        chunk: int,
        status: str,
        *,
        completed: int,
        failed: int,
        output_file_id: str | None = None,
        error_file_id: str | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        """Record what the latest poll of the chunk's batch said."""
        self._write(
            "record a batch's status",
            [
                (
                    "UPDATE batches SET status = ?, completed = ?, failed = ?, "
                    "output_file_id = ?, error_file_id = ?, errors = ?, updated_at = ? "
                    "WHERE chunk = ?",
                    (
                        status,
                        completed,
                        failed,
                        output_file_id,
                        error_file_id,
                        json.dumps(list(errors)) if errors else None,
                        time.time(),
                        chunk,
                    ),
                )
            ],
        )

    def release(self, chunk: int) -> int:
        """Mark the chunk collected and free its rows; return how many were still held.

        Call it after journaling the chunk's answers and errors (`Journal.record_*`, with
        group commits): the answers and the release commit together.
        """
        conn = self._conn
        try:
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
            held = conn.execute(
                "UPDATE rows SET batch_chunk = NULL WHERE batch_chunk = ?", (chunk,)
            ).rowcount
            conn.execute(
                "UPDATE batches SET collected_at = ?, updated_at = ? WHERE chunk = ?",
                (time.time(), time.time(), chunk),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise journal_error(exc, self._path, "record a collected batch") from exc
        return int(held)

    def rows_of(self, chunk: int) -> Iterator[int]:
        """Yield the indices of the rows the chunk holds, ascending, in pages."""
        last = -1
        while page := read_all(
            self._conn,
            self._path,
            "SELECT idx FROM rows WHERE batch_chunk = ? AND idx > ? ORDER BY idx LIMIT 5000",
            (chunk, last),
            "list a batch's rows",
        ):
            for (index,) in page:
                yield int(index)
            last = int(page[-1][0])

    def requests_of(self, chunk: int) -> Iterator[StoredRequest]:
        """Yield the stored requests of the rows the chunk holds, ascending, in pages.

        To write its file again when the process died before the upload was recorded.
        """
        last = -1
        sql = (
            "SELECT r.idx, r.line, i.body, i.est_tokens, i.row_model, i.custom_id FROM rows r "
            "JOIN row_inputs i ON i.idx = r.idx WHERE r.batch_chunk = ? AND r.idx > ? "
            "ORDER BY r.idx LIMIT 5000"
        )
        while page := read_all(self._conn, self._path, sql, (chunk, last), "read a batch"):
            for r in page:
                yield StoredRequest(r[0], r[1], json_value(r[2]), r[3], r[4], r[5])
            last = int(page[-1][0])

    def records(self, *, live_only: bool = False) -> list[BatchRecord]:
        """Return the journal's chunks, oldest first (none before schema 4)."""
        if self._schema < 4:
            return []
        where = " WHERE collected_at IS NULL" if live_only else ""
        rows = read_all(
            self._conn,
            self._path,
            f"SELECT {_COLUMNS} FROM batches{where} ORDER BY chunk",
            (),
            "list the batches",
        )
        return [_record(r) for r in rows]

    def held_rows(self) -> int:
        """Return how many rows live chunks hold (0 before schema 4)."""
        if self._schema < 4:
            return 0
        sql = "SELECT COUNT(*) FROM rows WHERE batch_chunk IS NOT NULL"
        return int(read_all(self._conn, self._path, sql, (), "count rows in batches")[0][0])
