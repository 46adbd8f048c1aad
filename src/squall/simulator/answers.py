"""What a successful answer contains: computed from the prompt, never generated.

Every request kind (see `routes.py`) answers through these, so a test can tell from the prompt
alone what it should get back (`expected_answer`) and how the ledger names it
(`prompt_digest`). Token counts are a cheap stand-in, the same for every kind:
`ceil(len(text) / 4) + 4` per prompt text, `max(1, ceil(len(answer) / 4))` for the answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
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


def prompt_tokens(texts: list[str]) -> int:
    """Return the prompt tokens charged for `texts` (one per message or input)."""
    return sum(math.ceil(len(t) / 4) + 4 for t in texts)


def completion_tokens(answer: str) -> int:
    """Return the completion tokens charged for `answer` (at least 1)."""
    return max(1, math.ceil(len(answer) / 4))


def json_bytes(data: Any) -> bytes:
    """Return `data` as the compact JSON bytes the simulator sends as a body."""
    return json.dumps(data, separators=(",", ":")).encode()
