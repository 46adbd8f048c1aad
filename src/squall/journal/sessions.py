"""Sessions: one record per run over the journal, for `squall status` and the wall time.

A session with no outcome is running now, or its process died (see `Journal.in_use_elsewhere`).
Since schema 3 a session's end also records each key's counters (`session_keys`): a key's
label, endpoint and masked form, never the key.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..errors import JournalError
from ..events import KeyStats
from .schema import journal_error

SessionOutcome = Literal["completed", "interrupted", "stopped"]

_OUTCOMES = frozenset({"completed", "interrupted", "stopped"})


def begin_session(conn: sqlite3.Connection, path: Path) -> int:
    """Record that a run starts now; return its session id."""
    try:
        cur = conn.execute(
            "INSERT INTO sessions (started_at, pid) VALUES (?, ?)", (time.time(), os.getpid())
        )
    except sqlite3.Error as exc:
        raise journal_error(exc, path, "record the run's start") from exc
    return int(cur.lastrowid or 0)


def end_session(
    conn: sqlite3.Connection,
    path: Path,
    session: int,
    outcome: str,
    keys: Sequence[KeyStats] = (),
) -> None:
    """Record how session `session` ended and, in the same transaction, its keys' counters.

    Raises:
        JournalError: `outcome` is not a known one, or the file cannot be written (nothing
            is recorded then).
    """
    if outcome not in _OUTCOMES:
        raise JournalError(f"unknown session outcome {outcome!r}: use one of {_OUTCOMES}")
    try:
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE sessions SET ended_at = ?, outcome = ? WHERE id = ?",
            (time.time(), outcome, session),
        )
        conn.executemany(
            "INSERT OR REPLACE INTO session_keys (session, endpoint, label, masked_key, state, "
            "sent, ok, rate_limited, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    session,
                    k.endpoint,
                    k.label,
                    k.masked_key,
                    k.state.value,
                    k.sent,
                    k.ok,
                    k.rate_limited,
                    k.errors,
                )
                for k in keys
            ],
        )
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise journal_error(exc, path, "record the run's end") from exc
