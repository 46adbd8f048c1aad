"""The values that flow between squall's layers: rows in, requests out, results back.

Treat them as read-only. The ones made once per row (Row, RequestSpec, Completion, RowResult)
are not frozen only because a frozen dataclass's `__init__` sets each field through
`object.__setattr__`, which made them 3-7 times slower to build: at thousands of rows a
second that showed in bench/overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

OUTPUT_FIELDS: tuple[str, ...] = (
    "response",
    "error",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "attempts",
    "endpoint",
)
"""Columns squall adds to each input row in the merged output, in this order."""


class RowState(IntEnum):
    r"""A row's state in the journal.

    PENDING --mark_sent--> SENT --record_success--> DONE
                            |  \--record_failure(final)--> FAILED
                            \--record_failure(retry)--> PENDING
    A row found SENT when a journal is opened was in flight at a crash: it may have been billed.
    """

    PENDING = 0
    SENT = 1
    DONE = 2
    FAILED = 3


BATCH_SUFFIX = " (batch)"
"""Added to the endpoint name a row records when the provider's Batch API answered it: the
account prices those tokens at the batch share (`Price.batch`)."""


@dataclass(slots=True)  # not frozen: see the module docstring
class Row:
    """One input row, as read.

    Attributes:
        index: 0-based position among the input's rows (the journal's key).
        line: where it sits in its file, 1-based, for error messages (CSV: the header is line 1).
        data: the row's fields, written back beside the answer.
    """

    index: int
    line: int
    data: dict[str, Any]


@dataclass(slots=True)  # not frozen: see the module docstring
class RequestSpec:
    """A chat-completion request built from one row; `body` has no `model` yet.

    Attributes:
        est_prompt_tokens: offline estimate of the prompt's tokens, for TPM pacing.
        custom_id: the row's id when the input is in OpenAI batch format.
        model: the model the row asks for itself (batch lines carry one), else None.
    """

    index: int
    line: int
    body: dict[str, Any]
    est_prompt_tokens: int
    custom_id: str | None = None
    model: str | None = None


@dataclass(slots=True)  # not frozen: see the module docstring
class Completion:
    """A parsed successful answer."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    raw: str | None = None
    """The full response body, kept when the output is in OpenAI batch format."""
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a row failed, as recorded: a stable kind, the HTTP status if any, and a message."""

    type: str
    status: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        """Return the error as the output's `error` column holds it."""
        return {"type": self.type, "status": self.status, "message": self.message}


@dataclass(slots=True)  # not frozen: see the module docstring
class RowResult:
    """What the journal holds for one row."""

    index: int
    state: RowState
    response: str | None = None
    error: ErrorInfo | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 0
    endpoint: str | None = None
    raw: str | None = None
    sent_count: int = 0

    def output_fields(self) -> dict[str, Any]:
        """Return the columns squall adds to the output row (see OUTPUT_FIELDS)."""
        return {
            "response": self.response,
            "error": self.error.as_dict() if self.error else None,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "attempts": self.attempts,
            "endpoint": self.endpoint,
        }


@dataclass(slots=True)
class FailureExamples:
    """A reason's count and the row numbers of its first few examples."""

    count: int = 0
    rows: list[int] = field(default_factory=list)
