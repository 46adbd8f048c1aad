"""A batch's lines: checked when the batch is validated, answered one by one, written out.

`check_lines` reads an input file as OpenAI's validation does (every line a JSON object with
custom_id, method POST, the batch's url, an object body; custom_ids unique) and returns the
lines or the batch's `errors`. `answer_line` answers one line's body with the same request
kinds, and so the same answers, as online requests (`routes.REQUEST_KINDS`), without the
online limits or random faults; a body the online API would refuse with 400 (or 404 for an
unknown model under `strict_models`) gets that status and error body, for the error file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import faults
from .routes import REQUEST_KINDS, AnsweredRequest
from .settings import SimConfig

ENDPOINTS = tuple(REQUEST_KINDS)
"""The endpoints a batch may name: every request kind the simulator answers online."""

EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED = {
    "code": "batch_cancelled",
    "message": "This request was not executed because the batch was cancelled.",
}


@dataclass(frozen=True)
class Line:
    """One valid input line: its custom_id and the request body it carries."""

    custom_id: str
    body: dict[str, Any]


def _problem(code: str, message: str, line: int | None, param: str | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _check_one(number: int, text: str, endpoint: str) -> Line | dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _problem("invalid_json_line", "This line is not a JSON object.", number, None)
    for key in ("custom_id", "method", "url", "body"):
        if key not in data:
            return _problem(
                "missing_required_parameter", f"Missing required parameter: '{key}'.", number, key
            )
    custom_id, body = data["custom_id"], data["body"]
    if not isinstance(custom_id, str) or not custom_id:
        message = "custom_id must be a non-empty string."
        return _problem("invalid_request", message, number, "custom_id")
    if data["method"] != "POST":
        message = f"Invalid method {data['method']!r}: batch requests must be POST."
        return _problem("invalid_request", message, number, "method")
    if data["url"] != endpoint:
        message = (
            f"The url {data['url']!r} does not match the batch's endpoint {endpoint!r}; "
            "every line must use the batch's endpoint."
        )
        return _problem("mismatched_endpoint", message, number, "url")
    if not isinstance(body, dict):
        return _problem("invalid_request", "body must be a JSON object.", number, "body")
    return Line(custom_id, body)


def check_lines(data: bytes, endpoint: str) -> tuple[list[Line], list[dict[str, Any]]]:
    """Return an input file's lines, or (no lines and) the errors that fail its batch."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_problem("invalid_file", "The input file is not UTF-8 text.", None, None)]
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        checked = _check_one(number, raw, endpoint)
        if isinstance(checked, Line) and checked.custom_id in seen:
            message = f"The custom_id {checked.custom_id!r} is used by another line."
            checked = _problem("duplicate_custom_id", message, number, "custom_id")
        if isinstance(checked, Line):
            seen.add(checked.custom_id)
            lines.append(checked)
        else:
            errors.append(checked)
    if not lines and not errors:
        errors.append(_problem("empty_file", "The input file holds no requests.", None, None))
    return ([], errors) if errors else (lines, [])


@dataclass(frozen=True)
class Answered:
    """One line answered: its request (for the ledger), status, body and fault."""

    request: AnsweredRequest
    status: int
    body: dict[str, Any]
    fault: str


def answer_line(
    config: SimConfig, endpoint: str, body: dict[str, Any], number: Callable[[], int]
) -> Answered:
    """Answer one line's body as the online endpoint would (without limits or faults).

    Args:
        config: the simulator's config (`strict_models`, `models`).
        endpoint: the batch's endpoint, a key of `REQUEST_KINDS`.
        body: the line's request body.
        number: returns the next answer's number (shared with online answers).
    """
    request = REQUEST_KINDS[endpoint](json.dumps(body).encode())
    if request.problem:
        error = faults.openai_error(request.problem, "invalid_request_error", None)
        return Answered(request, 400, json.loads(error), "bad_body")
    if config.strict_models and request.model not in config.models:
        message = f"The model `{request.model}` does not exist or you do not have access to it."
        error = faults.openai_error(message, "invalid_request_error", "model_not_found")
        return Answered(request, 404, json.loads(error), "model")
    if request.contains("SQUALL_BAD_REQUEST"):
        return Answered(request, 400, json.loads(faults.BAD_REQUEST), "bad_request")
    if request.contains("SQUALL_CONTENT_FILTER"):
        return Answered(request, 400, json.loads(faults.CONTENT_FILTERED), "content_filter")
    return Answered(request, 200, request.answer_body(number()), "")


def output_line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Return the output (or error) file line of a line answered with `status` and `body`."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
            "body": body,
        },
        "error": None,
    }


def unexecuted_line(custom_id: str, error: dict[str, str]) -> dict[str, Any]:
    """Return the error file line of a line never executed (`EXPIRED` or `CANCELLED`)."""
    return {
        "id": f"batch_req_{uuid.uuid4().hex[:24]}",
        "custom_id": custom_id,
        "response": None,
        "error": dict(error),
    }
