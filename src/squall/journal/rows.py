"""Small typed records: what `Journal.ingest` takes, and what reading the journal gives back.

The per-row ones are NamedTuples: as cheap to build as a tuple, and the old `(index, line,
fingerprint)` 3-tuples that ingest still takes index the same way. Their first field is
`index`, as in `squall.records.Row`: it shadows the `tuple.index` method, which nothing uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import jsoncodec
from ..events import KeyState
from ..records import FailureExamples, RowResult

JsonObject = Mapping[str, Any]


class IngestRow(NamedTuple):
    """One input row for `Journal.ingest`, with what sending and writing it will need.

    `data` and `body` are a mapping (encoded to JSON by the journal) or JSON text already.
    The optional fields may be None: such a row can be tracked but not sent from the journal
    (`Journal.iter_todo_requests`) nor written from it (`Journal.iter_output`).
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, as Row.index is named
    """0-based position among the input's rows, in input order."""
    line: int
    """1-based line in the input, for messages."""
    fingerprint: str
    """Hash of the row's content, to spot a changed input."""
    data: JsonObject | str | None = None
    """The row's input fields, written back beside the answer."""
    body: JsonObject | str | None = None
    """The request body without "model": what is sent for the row."""
    est_tokens: int | None = None
    """Estimated prompt tokens, for TPM pacing."""
    row_model: str | None = None
    """The model the row names itself (an OpenAI batch line's body.model), else None."""
    custom_id: str | None = None
    """An OpenAI batch line's custom_id, else None."""


class StoredRequest(NamedTuple):
    """A row to send, as the journal holds it (see `Journal.iter_todo_requests`)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as Row.index is named
    line: int
    body: dict[str, Any]
    """The request body without "model"."""
    est_tokens: int | None
    row_model: str | None
    custom_id: str | None


class OutputRow(NamedTuple):
    """A row for the merged output: its input fields and its result (see `iter_output`)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, as Row.index is named
    data: dict[str, Any] | None
    """The row's input fields; None for a row ingested without them (schema 1)."""
    result: RowResult
    """What the journal holds for the row; `result.state` says whether it is answered."""


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
    refreshed: int = 0
    """Known rows whose missing data or body (an older journal's) was filled in."""


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
class KeyTotals:
    """One key's counters summed over every session that recorded them (schema 3).

    Keys are told apart by endpoint and label (the key's id in the config): the journal
    never holds a key, only the masked form squall shows (`sk-...abcd`).
    """

    label: str
    endpoint: str
    masked_key: str
    """As the latest session that recorded the key showed it."""
    state: KeyState
    """Where the key stood at the end of the latest session that recorded it."""
    sent: int
    ok: int
    rate_limited: int
    errors: int
    sessions: int
    """How many sessions recorded this key."""


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
    retries: int | None = None
    """Requests sent again after a retryable error, over every session; None for a journal
    older than schema 3 (opened read-only), which did not count them."""
    keys: tuple[KeyTotals, ...] = ()
    """Each key's counters over the sessions that recorded them (`Journal.end_session`), in
    the order they were first recorded; empty before schema 3 or before any was."""


def json_text(value: JsonObject | str | None) -> str | None:
    """Return `value` as the JSON text a column stores (text is stored as given)."""
    if value is None or isinstance(value, str):
        return value
    return jsoncodec.dumps_body(value).decode("utf-8")


def json_value(text: str | None) -> Any:
    """Return the value of a stored JSON column (None for NULL)."""
    if text is None:
        return None
    return jsoncodec.loads(text.encode("utf-8", "surrogatepass"))
