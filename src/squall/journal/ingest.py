"""Ingest: the input's rows into the journal, in chunks, after checking the known ones.

The journal holds rows 0..known-1 and input rows come in index order, so every known row of
a chunk is compared (by fingerprint) before the chunk's first new row is inserted: a changed
input inserts nothing. A known row that matches but lacks its data or body (ingested by an
older squall, or as a bare 3-tuple) has them filled in from an `IngestRow`; nothing else of a
known row is touched, so a DONE row's answer stays as it is. What sending and writing need
lives in `row_inputs`, beside `rows` (see `schema.MIGRATIONS`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

from ..errors import InputChangedError, JournalError
from .rows import IngestRow, json_text

CHUNK = 5000
"""Rows per ingest transaction, and per page where the journal reads rows."""

IngestItem = tuple[int, int, str] | IngestRow
"""What ingest takes per row: an `IngestRow`, or the older (index, line, fingerprint)."""

Changed = Callable[[int, int, str], InputChangedError]
"""Makes the error for a changed input row: (index, line, why)."""

_INSERT_ROWS = "INSERT INTO rows (idx, line, fingerprint) VALUES (?, ?, ?)"
_MISSING = (
    "SELECT r.idx FROM rows r LEFT JOIN row_inputs i ON i.idx = r.idx "
    "WHERE r.idx BETWEEN ? AND ? AND (i.data IS NULL OR i.body IS NULL) ORDER BY r.idx"
)
# Inserts a new row's inputs; fills in what a known row's lack (never replaces a value).
_PUT_INPUTS = (
    "INSERT INTO row_inputs (idx, data, body, est_tokens, row_model, custom_id) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idx) DO UPDATE SET "
    "data = COALESCE(data, excluded.data), body = COALESCE(body, excluded.body), "
    "est_tokens = COALESCE(est_tokens, excluded.est_tokens), "
    "row_model = COALESCE(row_model, excluded.row_model), "
    "custom_id = COALESCE(custom_id, excluded.custom_id)"
)


def ingest_rows(
    conn: sqlite3.Connection, rows: Iterable[IngestItem], known: int, changed: Changed
) -> tuple[int, int, int]:
    """Ingest `rows` into a journal that holds `known` rows; return the counts.

    The counts are (rows seen, new rows, known rows refreshed). Streams: memory stays
    constant.

    Raises:
        InputChangedError: a known row differs; nothing of its chunk or later is inserted.
        JournalError: the indices do not run 0, 1, 2, ...
        sqlite3.Error: the file cannot be written (the caller says so).
    """
    expected = 0
    new = refreshed = 0
    source = iter(rows)
    while chunk := list(islice(source, CHUNK)):
        # Whole-list comparisons run in C: ingest is per row, so it must stay cheap.
        if [r[0] for r in chunk] != list(range(expected, expected + len(chunk))):
            at, bad = next((i, r[0]) for i, r in enumerate(chunk, expected) if r[0] != i)
            raise JournalError(
                f"ingest got row index {bad} where {at} was expected: "
                "rows must come in input order, numbered from 0"
            )
        expected += len(chunk)
        bare = all(len(r) == 3 for r in chunk)
        first = chunk[0][0]
        if first < known:
            compared = chunk[: known - first]
            _compare(conn, compared, changed)
            if not bare:
                refreshed += _refresh(conn, compared)
        fresh = chunk[known - first :] if first < known else chunk
        if fresh:
            _insert(conn, fresh, bare)
        new += len(fresh)
    return expected, new, refreshed


def _compare(conn: sqlite3.Connection, compared: Sequence[IngestItem], changed: Changed) -> None:
    stored = [
        fp
        for (fp,) in conn.execute(
            "SELECT fingerprint FROM rows WHERE idx BETWEEN ? AND ? ORDER BY idx",
            (compared[0][0], compared[-1][0]),
        )
    ]
    if [r[2] for r in compared] != stored:
        # A row missing from the journal (it never should be) counts as changed.
        index, line, _ = next(
            (r[:3] for r, old in zip(compared, stored, strict=False) if r[2] != old),
            compared[min(len(stored), len(compared) - 1)][:3],
        )
        raise changed(index, line, "it differs from the row the journal recorded")


def _refresh(conn: sqlite3.Connection, compared: Sequence[IngestItem]) -> int:
    """Fill in the data and body that known rows lack; return how many rows got them."""
    first = compared[0][0]
    missing = conn.execute(_MISSING, (first, compared[-1][0])).fetchall()
    params = []
    for (idx,) in missing:
        r = compared[idx - first]
        if isinstance(r, IngestRow) and (r.data is not None or r.body is not None):
            params.append(_inputs(r))
    if params:
        _write(conn, [(_PUT_INPUTS, params)])
    return len(params)


def _inputs(r: IngestRow) -> tuple[object, ...]:
    return (r[0], json_text(r[3]), json_text(r[4]), r[5], r[6], r[7])


def _insert(conn: sqlite3.Connection, fresh: Sequence[IngestItem], bare: bool) -> None:
    if bare:
        _write(conn, [(_INSERT_ROWS, fresh)])
        return
    rows = [r[:3] for r in fresh]
    inputs = [_inputs(r) for r in fresh if isinstance(r, IngestRow)]
    _write(conn, [(_INSERT_ROWS, rows), (_PUT_INPUTS, inputs)])


def _write(
    conn: sqlite3.Connection, batches: Sequence[tuple[str, Sequence[Sequence[object]]]]
) -> None:
    """Run each (sql, params) batch in one transaction."""
    conn.execute("BEGIN")
    try:
        for sql, params in batches:
            conn.executemany(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on some errors
            conn.execute("ROLLBACK")
        raise
