"""What goes wrong, and how it reads: refusals, injected faults and their bodies.

`Faults` draws the random fault for each request that passed its limits (from one RNG seeded
by `SimConfig.seed`, so a run's faults repeat) and shapes 5xx and malformed bodies, rotating
through every shape when asked to. The functions below word the refusals: 401/403 for keys,
400 for bad bodies and content triggers, 429 for limits (`limit_refusal`), and the
Retry-After headers that go with them.

Faults drawn (`SimConfig.p_*`, at most one per request): "429" (a spontaneous overload), "500",
"503", "reset" (the connection is cut halfway through the answer), "malformed" (a 200 whose
body is not an answer), "hang" (`hang_s` more latency, to trip client timeouts).
"""

from __future__ import annotations

import math
import random
import time
from email.utils import formatdate
from typing import Any

from .answers import json_bytes
from .limits import Refusal, format_duration
from .settings import FAULTS, BusyWording, ErrorShape, MalformedShape, RetryAfterStyle, SimConfig

JSON = "application/json"
_ERROR_SHAPES: tuple[ErrorShape, ...] = ("openai", "string", "detail", "text", "html")
_MALFORMED_SHAPES: tuple[MalformedShape, ...] = ("truncated", "not_json", "no_choices")
_ANSWER_KEYS = frozenset({"choices", "data"})


def openai_error(
    message: str, type_: str | None, code: str | None, param: str | None = None
) -> bytes:
    """Return an OpenAI-shaped error body: `{"error": {message, type, param, code}}`."""
    return json_bytes({"error": {"message": message, "type": type_, "param": param, "code": code}})


CONTENT_FILTERED = json_bytes(
    {
        "error": {
            "message": "The response was filtered due to the prompt triggering the content "
            "management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
            },
        }
    }
)
"""The 400 a prompt holding SQUALL_CONTENT_FILTER gets (Azure's wording)."""

BAD_REQUEST = openai_error(
    "Invalid request: the prompt asked for a bad request (SQUALL_BAD_REQUEST).",
    "invalid_request_error",
    None,
    "messages",
)
"""The 400 a prompt holding SQUALL_BAD_REQUEST gets."""

OVERLOADED = json_bytes(
    {
        "error": {
            "message": "The server is overloaded, please retry your request later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
)
"""The body of a spontaneous 429 (fault "429")."""


def unknown_key(shown: str) -> bytes:
    """Return the 401 body for an unknown or dead key, naming it as `shown`."""
    return openai_error(
        f"Incorrect API key provided: {shown}. You can find your API key in your dashboard.",
        "invalid_request_error",
        "invalid_api_key",
    )


def no_quota(shown: str) -> bytes:
    """Return the 403 body for a key out of credit, naming it as `shown`."""
    return openai_error(
        f"You exceeded your current quota for key {shown}, please check your plan "
        "and billing details.",
        "insufficient_quota",
        "insufficient_quota",
    )


def limit_refusal(
    refusal: Refusal, masked: str, max_concurrency: int | None, wording: BusyWording
) -> bytes:
    """Return the 429 body for a request over its key's limits (any mode, any limit)."""
    kind, wait = refusal
    what = "requests" if kind == "concurrency" else kind
    if kind == "concurrency" and wording == "concurrency":
        message = (
            f"Too many concurrent requests on key {masked}: at most {max_concurrency} at "
            f"once; please try again in {format_duration(wait)}."
        )
    else:
        message = (
            f"Rate limit reached for {what} on key {masked}: "
            f"please try again in {format_duration(wait)}."
        )
    return json_bytes(
        {"error": {"message": message, "type": what, "param": None, "code": "rate_limit_exceeded"}}
    )


def add_retry_after(headers: dict[str, str], style: RetryAfterStyle, wait: float) -> None:
    """Add the headers that say to come back in `wait` seconds, written the `style` way."""
    if style == "none":
        return
    if style == "date":
        headers["Retry-After"] = formatdate(math.ceil(time.time() + wait), usegmt=True)
        return
    headers["Retry-After"] = str(max(1, math.ceil(wait)))
    if style == "ms":
        headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))


class Faults:
    """The fault drawn for each request, and the bodies of 5xx and malformed answers."""

    def __init__(self, config: SimConfig) -> None:
        self._error_shape = config.error_shape
        self._malformed_shape = config.malformed_shape
        self._rng = random.Random(config.seed)
        self._cut: list[tuple[float, str]] = []
        total = 0.0
        for name in FAULTS:
            p = getattr(config, name)
            if p > 0:
                total += p
                self._cut.append((total, name[2:]))
        self._n_errors = 0
        self._n_malformed = 0

    def draw(self) -> str:
        """Return the fault for the next request ("" for none), as `SimConfig.p_*` say."""
        if not self._cut:
            return ""
        u = self._rng.random()
        for cut, name in self._cut:
            if u < cut:
                return name
        return ""

    def error_body(self, status: int) -> tuple[bytes, str]:
        """Return the body and content type of a 500 or 503."""
        shape = self._error_shape
        if shape == "rotate":
            shape = _ERROR_SHAPES[self._n_errors % len(_ERROR_SHAPES)]
            self._n_errors += 1
        reason = "Internal Server Error" if status == 500 else "Service Unavailable"
        if shape == "openai":
            return openai_error(
                "The server had an error while processing your request. Sorry about that!"
                if status == 500
                else "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ), JSON
        if shape == "string":
            return json_bytes({"error": reason}), JSON
        if shape == "detail":
            return json_bytes({"detail": reason}), JSON
        if shape == "text":
            return reason.encode(), "text/plain"
        page = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return page.encode(), "text/html"

    def malformed_body(self, answer: dict[str, Any]) -> tuple[bytes, str]:
        """Return a 200 body that is not `answer`: cut short, not JSON, or without choices.

        "no_choices" drops what the answer is made of: `choices` (chat, completions) or
        `data` (embeddings); the rest (usage, model) stays.
        """
        shape = self._malformed_shape
        if shape == "rotate":
            shape = _MALFORMED_SHAPES[self._n_malformed % len(_MALFORMED_SHAPES)]
            self._n_malformed += 1
        if shape == "truncated":
            data = json_bytes(answer)
            return data[: len(data) // 2], JSON
        if shape == "not_json":
            return b"upstream answered: OK", "text/plain"
        return json_bytes({k: v for k, v in answer.items() if k not in _ANSWER_KEYS}), JSON
