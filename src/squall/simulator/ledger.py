"""The ledger: every request the simulator handled, in memory and optionally in a file.

A test reads it to check what was really sent (`Simulator.ledger()`, `GET /_squall/ledger`,
or `iter_ledger_file()` for a `--ledger-file` written by a process). Each entry is one JSON
line in the file, flushed as it is written, so the file survives the process being killed.
`max_in_window()` answers "was any key over its limit in some window?".
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from ..redact import mask_key

REFUSED_BEFORE_LIMITS = frozenset({"auth", "bad_body", "model", "limit", "concurrency"})
"""Faults of requests that never counted against their key's limits."""


class LedgerEntry(NamedTuple):
    """One request the simulator handled (of any kind in `routes.REQUEST_KINDS`).

    Attributes:
        t: time.monotonic() when it was handled (comparable across processes on one host).
        key: the masked key, never the real one.
        model: the model asked for ("" when the body was unreadable).
        prompt_sha256: sha256 hex of the prompt: chat's last user message, or a completions
            or embeddings request's texts joined by newlines (one text: its own digest); "" when
            there was none.
        status: the HTTP status sent.
        served: True only when a complete 200 answer was written to the connection.
        fault: the fault that was injected ("" for none): "429", "500", "503", "reset",
            "malformed", "hang", "limit" (over a rate limit), "concurrency" (over the key's
            requests in flight), "bad_request", "content_filter"; or why it was refused
            before its limits: "auth", "bad_body", "model".
        inputs: how many prompts or inputs the request carried (an embeddings pack: its
            texts; 0 when the body was unreadable). Ledger files written before it read as 1.
        event: what happened: "request" (an online request, as every entry was before the
            Batch API), "file_upload", "file_download" (a file's content sent, to a client
            still connected), "batch_create", or "batch_line" (one line of a batch answered:
            its `status` is the line's, and it never counted against the key's online
            limits). Only "request" entries are ever `served`.
        batch_id: the batch of a "batch_create" or "batch_line" entry ("" otherwise).
        custom_id: a "batch_line" entry's custom_id ("" otherwise).
        file_id: the file uploaded ("file_upload"), downloaded ("file_download"), or a
            batch's input file ("batch_create").
        kind: the request kind's path, e.g. "/v1/chat/completions", for batch entries (a
            batch's endpoint); "" for online requests, which ledger files never named.
        metadata: a "batch_create" entry's metadata (None otherwise).
        Ledger files written before these fields read with their defaults.
    """

    t: float
    key: str
    model: str
    prompt_sha256: str
    status: int
    served: bool
    fault: str
    inputs: int = 1
    event: str = "request"
    batch_id: str = ""
    custom_id: str = ""
    file_id: str = ""
    kind: str = ""
    metadata: dict[str, str] | None = None

    @property
    def online(self) -> bool:
        """Whether this entry is an online request (not the Files or Batch API)."""
        return self.event == "request"


class Ledger:
    """The entries recorded so far (the last `max_entries`) and the exact served count.

    Recording is safe from the simulator's loop while other threads read.
    """

    def __init__(self, max_entries: int, path: Path | None = None) -> None:
        self._entries: deque[LedgerEntry] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self._served = 0
        self._path = path
        self._out: IO[str] | None = None

    def open_file(self) -> None:
        """Start appending entries to the ledger file, if there is one (idempotent)."""
        if self._path is not None and self._out is None:
            self._out = self._path.open("a", encoding="utf-8", buffering=1)

    def close_file(self) -> None:
        """Stop appending to the ledger file."""
        if self._out is not None:
            self._out.close()
            self._out = None

    def record(self, entry: LedgerEntry) -> None:
        """Add `entry` (and write it to the file as a JSON line)."""
        with self._lock:
            self._entries.append(entry)
            if entry.served:
                self._served += 1
        if self._out is not None:
            self._out.write(json.dumps(entry._asdict()) + "\n")

    def entries(self) -> list[LedgerEntry]:
        """Return a copy of the entries kept, oldest first."""
        with self._lock:
            return list(self._entries)

    @property
    def served_count(self) -> int:
        """How many complete 200 answers were written (exact, however many were dropped)."""
        return self._served


def iter_ledger_file(path: str | Path) -> Iterator[LedgerEntry]:
    """Yield the entries a `--ledger-file` holds (a torn last line is skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                yield LedgerEntry(**json.loads(line))
            except (ValueError, TypeError):
                continue


def max_in_window(entries: Iterable[LedgerEntry], key: str, window_s: float) -> int:
    """Return the most requests of `key` that counted against its limits in any `window_s`.

    Only online requests count (batch lines never do), and a request counts when it got past
    its limits: every entry but those refused before them
    (`REFUSED_BEFORE_LIMITS`: unknown key, bad body, unknown model, over a limit). Windows
    are half-open, `[t, t + window_s)`, as the sliding-window limit counts them, so a key in
    "sliding" mode never shows more than its window's capacity. The ledger's `t` is read a
    few microseconds before the limit is checked, so a test comparing against the capacity
    should pass a `window_s` a millisecond shorter than the key's.

    Args:
        entries: ledger entries in any order.
        key: the masked key as the ledger holds it (`SimKey.masked`), or the real key.
        window_s: the window's length in seconds.
    """
    wanted = {key, mask_key(key)}
    times = sorted(
        e.t
        for e in entries
        if e.key in wanted and e.online and e.fault not in REFUSED_BEFORE_LIMITS
    )
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
