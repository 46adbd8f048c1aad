"""What a successful answer contains: computed from the prompt, never generated.

Every request kind (see `routes.py`) answers through these, so a test can tell from the prompt
alone what it should get back (`expected_answer`, `expected_embedding`) and how the ledger
names it (`prompt_digest`). Token counts are a cheap stand-in, the same for every kind:
`ceil(len(text) / 4) + 4` per prompt text, `max(1, ceil(len(answer) / 4))` for the answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from array import array
from typing import Any

_ARITHMETIC = re.compile(r"\d+(?:\s*[-+x*]\s*\d+)+")
_TERM = re.compile(r"\d+|[-+x*]")


def prompt_digest(prompt: str) -> str:
    """Return the sha256 hex digest of `prompt` (what the ledger stores per request)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def expected_answer(prompt: str) -> str:
    """Return the text the simulator answers to a last user message `prompt`.

    The first run of integers joined by + - x * (x means *, usual precedence) is
    evaluated, e.g. "what is 12 + 7 x 3?" -> "33"; any other prompt gets
    `echo:<first 16 hex chars of its sha256>`.
    """
    match = _ARITHMETIC.search(prompt)
    if match is None:
        return "echo:" + prompt_digest(prompt)[:16]
    tokens = _TERM.findall(match.group(0))
    total = 0
    term = int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2], strict=False):
        if op in "x*":
            term *= int(operand)
        else:
            total += term
            term = int(operand) if op == "+" else -int(operand)
    return str(total + term)


def expected_embedding(text: str, dimensions: int) -> list[float]:
    """Return the vector the simulator answers for `text`: unit length, float32 values.

    Its components are drawn from SHAKE-256 of the text (so equal texts get equal vectors
    and different ones unrelated ones), each in [-1, 1), then scaled to unit length and
    rounded to float32, so a JSON answer and a base64 one hold exactly the same numbers.
    """
    raw = hashlib.shake_256(text.encode("utf-8")).digest(4 * dimensions)
    values = [n / 2147483648.0 - 1.0 for n in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", [v / norm for v in values]).tolist()


def text_list(value: Any) -> list[str] | None:
    """Return a `prompt` or `input` as a list of texts: one text, or a non-empty list of them.

    None for anything else (token ids, empty lists, other values).
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return value
    return None


def prompt_tokens(texts: list[str]) -> int:
    """Return the prompt tokens charged for `texts` (one per message or input)."""
    return sum(math.ceil(len(t) / 4) + 4 for t in texts)


def completion_tokens(answer: str) -> int:
    """Return the completion tokens charged for `answer` (at least 1)."""
    return max(1, math.ceil(len(answer) / 4))


def json_bytes(data: Any) -> bytes:
    """Return `data` as the compact JSON bytes the simulator sends as a body."""
    return json.dumps(data, separators=(",", ":")).encode()


def read_payload(raw: bytes) -> tuple[dict[str, Any], bool]:
    """Return a request body's JSON object and whether it was one ({} and False if not)."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return {}, False
    return (payload, True) if isinstance(payload, dict) else ({}, False)
