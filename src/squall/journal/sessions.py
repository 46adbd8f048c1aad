"""Sessions: one record per run over the journal, for `squall status` and the wall time.

A session with no outcome is running now, or its process died (see `Journal.in_use_elsewhere`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Literal

from ..errors import JournalError
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


def end_session(conn: sqlite3.Connection, path: Path, session: int, outcome: str) -> None:
    """Record how session `session` ended.

    Raises:
        JournalError: `outcome` is not a known one, or the file cannot be written.
    """
    if outcome not in _OUTCOMES:
        raise JournalError(f"unknown session outcome {outcome!r}: use one of {_OUTCOMES}")
    try:
        conn.execute(
            "UPDATE sessions SET ended_at = ?, outcome = ? WHERE id = ?",
            (time.time(), outcome, session),
        )
    except sqlite3.Error as exc:
        raise journal_error(exc, path, "record the run's end") from exc
