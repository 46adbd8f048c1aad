"""Equipment for the journal's tests: rows as a reader gives them, answers, and states on disk.

The tests under tests/journal import it by its bare name (pytest puts tests/journal on
sys.path); mypy finds it through tests/_mypy_path/journal_support.pyi.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from squall.events import KeyState, KeyStats
from squall.journal import IngestRow, Journal
from squall.records import Completion, ErrorInfo

RATE = ErrorInfo("rate_limited", 429, "slow down")
BAD = ErrorInfo("bad_request", 400, "bad prompt")


def rows(
    n: int, *, start: int = 0, changed: dict[int, str] | None = None
) -> Iterator[tuple[int, int, str]]:
    """Rows as a reader gives them: index, line (a header on line 1), fingerprint."""
    changed = changed or {}
    for i in range(start, n):
        yield i, i + 2, changed.get(i, f"fp-{i}")


def data_of(i: int) -> dict[str, Any]:
    """Row `i`'s input fields, as `full_rows` gives them."""
    return {"id": i, "prompt": f"what is {i} + {i}?", "tags": ["数学", None]}


def body_of(i: int) -> dict[str, Any]:
    """Row `i`'s request body, as `full_rows` gives it."""
    return {"messages": [{"role": "user", "content": f"what is {i} + {i}?"}], "max_tokens": 8}


def full_rows(n: int, *, start: int = 0, batch: bool = False) -> Iterator[IngestRow]:
    """Rows with what sending and writing need (fingerprints as `rows` makes them)."""
    for i in range(start, n):
        yield IngestRow(
            i,
            i + 2,
            f"fp-{i}",
            data=data_of(i),
            body=body_of(i),
            est_tokens=10 + i,
            row_model=f"m-{i}" if batch else None,
            custom_id=f"req-{i}" if batch else None,
        )


def answer(i: int, *, raw: str | None = None) -> Completion:
    return Completion(
        text=f"answer {i}",
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=20,
        raw=raw,
        request_id=f"req-{i}",
    )


def succeed(j: Journal, i: int, *, endpoint: str = "a", model: str | None = None) -> None:
    j.mark_sent(i)
    j.record_success(i, answer(i), latency_s=0.25, attempts=1, endpoint=endpoint, model=model)


def states(path: Path) -> dict[int, int]:
    with sqlite3.connect(path) as conn:
        got = dict(conn.execute("SELECT idx, state FROM rows"))
    conn.close()
    return got


def key(
    label: str,
    *,
    endpoint: str = "a",
    sent: int = 0,
    ok: int = 0,
    rate_limited: int = 0,
    errors: int = 0,
    state: KeyState = KeyState.ACTIVE,
    masked: str = "sk-...abcd",
) -> KeyStats:
    """A key's snapshot at a session's end, as `EndpointPool.statistics()` gives it."""
    return KeyStats(
        label=label,
        endpoint=endpoint,
        masked_key=masked,
        state=state,
        in_flight=0,
        sent=sent,
        ok=ok,
        rate_limited=rate_limited,
        errors=errors,
        rpm=None,
        tpm=None,
        discovering=False,
        rate_now=0.0,
    )
