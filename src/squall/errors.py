"""squall's exceptions.

Every message says what the caller should do next.

SquallError
├── ConfigError            bad or missing settings; fix and rerun
├── InputError             a bad input file, row or field (names file, line and field)
├── OutputError            the output file cannot be written
├── JournalError           the journal file is unusable
│   └── InputChangedError  the input differs from the journal's rows; --restart or a new journal
├── MissingExtraError      an optional dependency is missing; the message says what to install
├── RunStopped             the run stopped early but cleanly (no usable key, cost cap); resumable
├── ServeError             an inference engine could not be started or checked
├── BatchAPIError          a Files or Batches API call failed; `retryable`: a later try may pass
└── RequestError           one HTTP request failed (raised by transport, handled by the engine)
    ├── RetryableError
    │   ├── RateLimited        429; carries retry_after when the server sent one
    │   ├── ServerError        5xx
    │   ├── RequestTimeout
    │   ├── ConnectionLost     connection refused or reset
    │   └── MalformedResponse  a 2xx body that could not be parsed
    └── FatalRequestError
        ├── BadRequest         400/404/413/422 and other 4xx: the row is recorded as failed
        ├── ContentFiltered    the provider refused the content
        └── AuthError          401/403: the key leaves the pool
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .limits import RateInfo


class SquallError(Exception):
    """Base class of every error squall raises on purpose."""


class ConfigError(SquallError):
    """Settings are bad or missing: fix the config file, flag or environment and rerun."""


class InputError(SquallError):
    """A bad input file, row or field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class OutputError(SquallError):
    """The output file cannot be written; the journal still holds every answer."""


class JournalError(SquallError):
    """The journal file is unusable."""


class InputChangedError(JournalError):
    """The input's rows differ from those the journal was made for."""

    def __init__(self, message: str, *, row: int | None = None) -> None:
        self.row = row
        super().__init__(message)


class MissingExtraError(SquallError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(f"{what} needs the '{module}' package: pip install \"squall[{extra}]\"")


class RunStopped(SquallError):
    """The run stopped early but cleanly; everything done is journaled and a rerun resumes."""


class ServeError(SquallError):
    """An inference engine could not be started, or did not become ready."""


class BatchAPIError(SquallError):
    """A call to the provider's Files or Batches API failed; the message says what to do next.

    Attributes:
        status: the HTTP status, or None when no response arrived (or it could not be read).
        retryable: True when the same call may pass later (connection lost, timeout, 429, 5xx,
            an unreadable answer); False when it would fail the same way (a wrong key, an id
            not on this account, a request the provider refuses).
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class RequestError(SquallError):
    """One HTTP request failed.

    Attributes:
        status: the HTTP status, or None when no response arrived.
        kind: a short stable name for the reason, used in accounts ("rate_limited", ...).
    """

    kind = "request_error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        self.message = message
        # The response's rate-limit headers (a squall.limits.RateInfo), set by transport.
        self.rate: RateInfo | None = None
        super().__init__(message)


class RetryableError(RequestError):
    """A failure worth trying again, maybe on another key."""

    kind = "retryable"


class RateLimited(RetryableError):
    """429: the key is over a limit. `retry_after` is in seconds when the server said.

    `concurrency`: the answer said the key has too many requests in flight (not too many a
    minute), so fewer at once is the cure rather than a pause.
    """

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        retry_after: float | None = None,
        concurrency: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.concurrency = concurrency
        super().__init__(message, status=status)


class ServerError(RetryableError):
    """5xx from the server."""

    kind = "server_error"


class RequestTimeout(RetryableError):
    """No complete answer within the timeout."""

    kind = "timeout"


class ConnectionLost(RetryableError):
    """Connection refused, reset or closed mid-answer."""

    kind = "connection"

    def __init__(self, message: str, *, status: int | None = None, refused: bool = False) -> None:
        self.refused = refused
        super().__init__(message, status=status)


class MalformedResponse(RetryableError):
    """A successful status with a body that is not a chat completion."""

    kind = "malformed"


class FatalRequestError(RequestError):
    """A failure that another try would repeat: record it and go on."""

    kind = "fatal"


class BadRequest(FatalRequestError):
    """400/404/413/422 and other 4xx: the request itself is wrong."""

    kind = "bad_request"


class ContentFiltered(FatalRequestError):
    """The provider refused to answer this content."""

    kind = "content_filter"


class AuthError(FatalRequestError):
    """401/403: the key is wrong, expired or out of credit; it leaves the pool."""

    kind = "auth"
