"""Reading the journal: rows to send, results, the merged output's rows, and statistics.

Every iterator reads in pages of `CHUNK` rows keyed on the last index seen, so memory stays
constant and the journal may be written while one runs. A journal of an older schema (opened
read-only, so not migrated) is read as it is: what it lacks reads as None.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from ..errors import JournalError
from ..events import KeyState
from ..records import ErrorInfo, FailureExamples, RowResult
from .ingest import CHUNK
from .rows import (
    JournalStats,
    KeyTotals,
    OutputRow,
    SessionRecord,
    StoredRequest,
    TokenUsage,
    json_value,
)
from .schema import DONE, FAILED, PENDING, SENT, STATES, read_all

_RESULT_COLUMNS = (
    "idx, state, response, error_type, error_status, error_message, finish_reason, "
    "prompt_tokens, completion_tokens, latency_s, attempts, endpoint, raw, sent_count"
)
_RESULT_COLUMNS_R = ", ".join(f"r.{c.strip()}" for c in _RESULT_COLUMNS.split(","))
_WITH_INPUTS = "rows r LEFT JOIN row_inputs i ON i.idx = r.idx"
_TODO = f"(state IN ({PENDING}, {SENT}) OR (state = {FAILED}{{failed}}))"
"""The rows to send; `failed` narrows the FAILED ones (to the retryable, or not at all)."""


_OUTSIDE_BATCHES = " AND batch_chunk IS NULL"
"""Rows a live batch holds are not to send: the provider is answering them (schema 4)."""


def _todo(retry_failed: bool, schema: int = 4) -> str:
    todo = _TODO.format(failed="" if retry_failed else " AND retryable = 1")
    return todo + _OUTSIDE_BATCHES if schema >= 4 else todo


def _result(r: Any) -> RowResult:
    # Positional, in RowResult's field order: keywords cost a third more per row.
    return RowResult(
        r[0],
        STATES[r[1]],
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


def _key_state(value: str) -> KeyState:
    try:
        return KeyState(value)
    except ValueError:
        raise JournalError(f"the journal holds an unknown key state {value!r}") from None


class JournalReader:
    """The reading half of a journal connection (the `Journal` delegates to it)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, schema: int) -> None:
        self._conn = conn
        self.path = path
        self.schema = schema
        """The file's schema version (older than the latest only when opened read-only)."""

    def read(self, sql: str, params: tuple[Any, ...], action: str) -> list[Any]:
        """Return a query's rows; an SQLite error becomes a JournalError saying `action`."""
        return read_all(self._conn, self.path, sql, params, action)

    def _pages(self, sql: str, action: str) -> Iterator[list[Any]]:
        """Yield pages of `sql` (which takes the last index seen, column 0 is idx)."""
        last = -1
        while page := self.read(sql, (last,), action):
            yield page
            last = page[-1][0]

    def get_meta(self, key: str) -> str | None:
        """Return the value stored under `key`, or None."""
        row = self.read("SELECT value FROM meta WHERE key = ?", (key,), "read meta")
        return str(row[0][0]) if row else None

    # -- rows --------------------------------------------------------------------------------

    def iter_todo(self, *, retry_failed: bool = False) -> Iterator[int]:
        """Yield the indices of rows to send, ascending (see `Journal.iter_todo`)."""
        todo = _todo(retry_failed, self.schema)
        sql = f"SELECT idx FROM rows WHERE idx > ? AND {todo} ORDER BY idx LIMIT {CHUNK}"
        for page in self._pages(sql, "list the rows to send"):
            for (index,) in page:
                yield index

    def iter_todo_requests(self, *, retry_failed: bool = False) -> Iterator[StoredRequest]:
        """Yield the rows to send with their stored requests (see `Journal.iter_todo_requests`)."""
        todo = _todo(retry_failed, self.schema)
        if self.schema < 2:
            raise JournalError(
                f"the journal {self.path} is from an older squall and holds no requests: "
                "open it for a run (that upgrades it) and ingest the input again"
            )
        lacking = self.read(
            f"SELECT r.idx, r.line FROM {_WITH_INPUTS} WHERE i.body IS NULL AND {todo} "
            "ORDER BY r.idx LIMIT 1",
            (),
            "list the rows to send",
        )
        if lacking:
            index, line = lacking[0]
            raise JournalError(
                f"the journal {self.path} holds no request for row {index} (line {line}): it "
                "was ingested by an older squall. Rerun: ingesting the input again stores "
                "the requests of the rows that lack them"
            )
        sql = (
            f"SELECT r.idx, r.line, i.body, i.est_tokens, i.row_model, i.custom_id "
            f"FROM {_WITH_INPUTS} WHERE r.idx > ? AND {todo} ORDER BY r.idx LIMIT {CHUNK}"
        )
        for page in self._pages(sql, "list the rows to send"):
            for r in page:
                yield StoredRequest(r[0], r[1], json_value(r[2]), r[3], r[4], r[5])

    def iter_results(self) -> Iterator[RowResult]:
        """Yield every row's result in index order (see `Journal.iter_results`)."""
        sql = f"SELECT {_RESULT_COLUMNS} FROM rows WHERE idx > ? ORDER BY idx LIMIT {CHUNK}"
        for page in self._pages(sql, "read the results"):
            for r in page:
                yield _result(r)

    def iter_output(self) -> Iterator[OutputRow]:
        """Yield every row with its input fields and result (see `Journal.iter_output`)."""
        if self.schema >= 2:
            source, data = _WITH_INPUTS, "i.data"
        else:
            source, data = "rows r", "NULL"
        sql = (
            f"SELECT {_RESULT_COLUMNS_R}, {data} FROM {source} "
            f"WHERE r.idx > ? ORDER BY r.idx LIMIT {CHUNK}"
        )
        for page in self._pages(sql, "read the rows for the output"):
            for r in page:
                yield OutputRow(r[0], json_value(r[14]), _result(r))

    # -- statistics --------------------------------------------------------------------------

    def state_counts(self) -> dict[int, int]:
        """Return the number of rows in each state, by state value."""
        counts = dict.fromkeys((PENDING, SENT, DONE, FAILED), 0)
        for state, n in self.read(
            "SELECT state, COUNT(*) FROM rows GROUP BY state", (), "count rows"
        ):
            counts[state] = n
        return counts

    def count(self) -> int:
        """Return the number of rows."""
        return int(self.read("SELECT COUNT(*) FROM rows", (), "count rows")[0][0])

    def sessions(self) -> tuple[SessionRecord, ...]:
        """Return every run over the journal, oldest first."""
        return tuple(
            SessionRecord(*r)
            for r in self.read(
                "SELECT id, started_at, ended_at, outcome, pid FROM sessions ORDER BY id",
                (),
                "read sessions",
            )
        )

    def statistics(self, in_flight_at_open: int) -> JournalStats:
        """Return a snapshot of the whole journal (see `Journal.statistics`)."""
        counts = self.state_counts()
        sums = self.read(
            "SELECT COALESCE(SUM(sent_count), 0), COALESCE(SUM(prompt_tokens), 0), "
            "COALESCE(SUM(completion_tokens), 0), MIN(updated_at), MAX(updated_at) FROM rows",
            (),
            "read statistics",
        )[0]
        sessions = self.sessions()
        starts = [t for t in (sums[3], *(s.started_at for s in sessions)) if t is not None]
        ends = [t for t in (sums[4], *(s.ended_at for s in sessions)) if t is not None]
        created = self.get_meta("created_at")
        return JournalStats(
            total=sum(counts.values()),
            pending=counts[PENDING],
            sent=counts[SENT],
            done=counts[DONE],
            failed=counts[FAILED],
            in_flight_at_open=in_flight_at_open,
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
            created_at=None if created is None else float(created),
            sessions=sessions,
            retries=self.retries(),
            keys=self.key_totals(),
        )

    def retries(self) -> int | None:
        """Return the retries of every session (None before schema 3, which kept no count)."""
        if self.schema < 3:
            return None
        sql = "SELECT COALESCE(SUM(retries), 0) FROM rows"
        return int(self.read(sql, (), "count retries")[0][0])

    def key_totals(self) -> tuple[KeyTotals, ...]:
        """Return each key's counters summed over the sessions that recorded them.

        In the order keys were first recorded (none before schema 3).
        """
        if self.schema < 3:
            return ()
        # The latest session's masked form and state: by the greatest (session, rowid).
        rows = self.read(
            "SELECT k.label, k.endpoint, last.masked_key, last.state, SUM(k.sent), SUM(k.ok), "
            "SUM(k.rate_limited), SUM(k.errors), COUNT(*), MIN(k.rowid) AS first "
            "FROM session_keys k JOIN session_keys last ON last.rowid = ("
            "  SELECT l.rowid FROM session_keys l WHERE l.endpoint = k.endpoint "
            "  AND l.label = k.label ORDER BY l.session DESC, l.rowid DESC LIMIT 1) "
            "GROUP BY k.endpoint, k.label ORDER BY first",
            (),
            "read the keys' counters",
        )
        return tuple(
            KeyTotals(
                label=r[0],
                endpoint=r[1],
                masked_key=r[2],
                state=_key_state(r[3]),
                sent=int(r[4]),
                ok=int(r[5]),
                rate_limited=int(r[6]),
                errors=int(r[7]),
                sessions=int(r[8]),
            )
            for r in rows
        )

    def _failures(self) -> dict[str, FailureExamples]:
        out: dict[str, FailureExamples] = {}
        for kind, n in self.read(
            f"SELECT COALESCE(error_type, 'unknown'), COUNT(*) FROM rows WHERE state = {FAILED} "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
            (),
            "read failures",
        ):
            examples = self.read(
                f"SELECT idx FROM rows WHERE state = {FAILED} "
                "AND COALESCE(error_type, 'unknown') = ? ORDER BY idx LIMIT 5",
                (kind,),
                "read failures",
            )
            out[kind] = FailureExamples(count=n, rows=[r[0] for r in examples])
        return out

    def _tokens_by(self, column: Literal["endpoint", "model"]) -> dict[str, TokenUsage]:
        rows = self.read(
            f"SELECT {column}, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
            f"COALESCE(SUM(completion_tokens), 0) FROM rows "
            f"WHERE state = {DONE} AND {column} IS NOT NULL GROUP BY {column} ORDER BY {column}",
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
                row = self.read(
                    "SELECT MAX(updated_at) FROM rows WHERE updated_at >= ? "
                    "AND (? IS NULL OR updated_at < ?)",
                    (s.started_at, until, until),
                    "read activity",
                )
                end = row[0][0] if row[0][0] is not None else s.started_at
            total += max(0.0, end - s.started_at)
        return total
