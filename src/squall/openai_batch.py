"""The OpenAI Batch API file format: request lines in, output lines out.

An input line is `{"custom_id", "method", "url", "body"}`: `url` names the operation (one of
`squall.operations.batch_urls()`), `body` is that operation's request with its own `model`.
An output line is `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}`, one per input line, in input order. Only JSON Lines holds these
(`squall.formats.BATCH_FORMATS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from . import jsoncodec
from .errors import InputError
from .operations import Operation, batch_urls
from .records import Row, RowResult, RowState

KEYS = ("custom_id", "url", "body")
"""The fields that make an input row a batch request line (`method` may be left out)."""


def is_batch_line(data: Mapping[str, Any]) -> bool:
    """Return True when `data` looks like an OpenAI batch request line."""
    return all(key in data for key in KEYS)


def check_line(row: Row, name: str) -> None:
    """Check that a row of a batch input is a well-formed batch request line.

    Raises:
        InputError: a key is missing, `custom_id` is not a non-empty string, `method` is not
            POST, or `body` is not an object; the message names the file, line and field.
    """
    data = row.data
    for key in KEYS:
        if key not in data:
            raise InputError(
                "is not an OpenAI batch request, yet the first line is: every line needs "
                "custom_id, method, url and body",
                file=name,
                line=row.line,
                field=key,
            )
    custom_id = data["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        raise InputError(
            "custom_id must be a non-empty string", file=name, line=row.line, field="custom_id"
        )
    method = data.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        raise InputError(
            f"method is {method!r}; batch requests must be POST",
            file=name,
            line=row.line,
            field="method",
        )
    if not isinstance(data["body"], Mapping):
        raise InputError(
            "body must be a JSON object holding the request",
            file=name,
            line=row.line,
            field="body",
        )


def line_model(data: Mapping[str, Any]) -> str | None:
    """Return the model a batch line's body names, or None (absent, empty or not text)."""
    body = data.get("body")
    model = body.get("model") if isinstance(body, Mapping) else None
    return model if isinstance(model, str) and model else None


def request_body(
    row: Row, operation: Operation, extras: Mapping[str, Any], source_name: str
) -> tuple[dict[str, Any], str | None]:
    """Return a batch line's body and the model it names.

    The body is the run's `extras` under the line's own fields, with `model` removed.

    Raises:
        InputError: the line's url is not `operation`'s, its body is not an object, or its
            model is not a string.
    """
    data = row.data

    def fail(message: str, field: str) -> InputError:
        return InputError(message, file=source_name, line=row.line, field=field)

    url = data.get("url")
    if url != operation.batch_url:
        known = batch_urls()
        if url in known:
            raise fail(
                f"url is {url!r}; this run sends {operation.batch_url} requests: send the "
                "other lines in a run of their own",
                "url",
            )
        raise fail(
            f"url is {url!r}; squall sends only {' and '.join(known)} requests: remove "
            "other lines or send them with another tool",
            "url",
        )
    source = data.get("body")
    if not isinstance(source, Mapping):
        raise fail("body must be a JSON object", "body")
    body = {**extras, **source}
    model = body.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise fail("body.model must be a string", "body.model")
    return body, model


def custom_id_of(data: Mapping[str, Any]) -> str | None:
    """Return a batch line's custom_id when it is text, else None."""
    custom_id = data.get("custom_id")
    return custom_id if isinstance(custom_id, str) else None


def output_line(row: Row, result: RowResult | None, operation: Operation) -> dict[str, Any]:
    """Return the OpenAI Batch API output object for one batch input line and its result.

    A line without an answer yet gets the error `not_completed`; a failed line gets its error,
    and a response when the failure had an HTTP status. An answer's body is the raw body
    journaled when there is one, else the operation's rebuild of it.
    """
    custom_id = row.data.get("custom_id")
    seed = f"{row.index}\x00{custom_id}".encode("utf-8", "surrogatepass")
    line_id = "batch_req_" + hashlib.blake2b(seed, digest_size=12).hexdigest()
    out: dict[str, Any] = {"id": line_id, "custom_id": custom_id, "response": None, "error": None}
    if result is None or result.state in (RowState.PENDING, RowState.SENT):
        out["error"] = {
            "code": "not_completed",
            "message": "squall has no answer for this line yet: rerun to resume the run",
        }
        return out
    if result.state == RowState.DONE:
        body = _answer_body(result, operation)
        request_id = body.get("id") if isinstance(body.get("id"), str) else None
        out["response"] = {
            "status_code": 200,
            "request_id": request_id or line_id.replace("batch_req_", "req_"),
            "body": body,
        }
        return out
    error = result.error
    code = error.type if error is not None else "failed"
    message = error.message if error is not None else "the request failed"
    if error is not None and error.status is not None:
        out["response"] = {
            "status_code": error.status,
            "request_id": line_id.replace("batch_req_", "req_"),
            "body": {"error": {"message": message, "type": code, "param": None, "code": None}},
        }
    out["error"] = {"code": code, "message": message}
    return out


def _answer_body(result: RowResult, operation: Operation) -> dict[str, Any]:
    if result.raw:
        try:
            body = jsoncodec.loads(result.raw.encode("utf-8", "surrogatepass"))
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
    return operation.rebuild_body(result)
