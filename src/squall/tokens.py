"""Offline token estimates for pacing requests against a tokens-per-minute limit.

No tokenizer is downloaded or loaded: squall only needs a number close enough to pace TPM
budgets, and the provider's `usage` (journaled per row) is the true count afterwards.

The heuristic: a CJK, kana, hangul or other 3-byte-in-UTF-8 character is about one token;
other text is about four characters per token. Both follow from the UTF-8 length alone.
With `b` bytes and `c` characters, if every character takes 1 or 3 bytes there are
`w = (b - c) / 2` wide ones, and `w + (c - w) / 4` simplifies to `(3b - c) / 8`. Two-byte
characters (Cyrillic, Greek, accented Latin) come out at ~0.6 tokens each and 4-byte ones
(emoji) at ~1.4, both near what BPE tokenizers give.

Expected error, from the usual characters-per-token ratios of these tokenizers (squall cannot
measure offline; the journal's `usage` columns show the true counts after a run):
- English prose: within about ±20% (cl100k/o200k give ~4 characters per token).
- Chinese: within about -25%/+40%. Qwen and o200k give ~0.6-0.8 tokens per character, so
  squall overestimates them (the safe side for pacing); cl100k gives ~1-1.3, so squall
  underestimates it slightly.
- Digits, code and base64 tokenize denser than prose: expect up to ~2x underestimates.
Per message, 4 tokens of framing are added, and 3 for the priming of the reply, as OpenAI
documents for its chat format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

MESSAGE_OVERHEAD = 4
"""Tokens of framing each chat message costs on top of its content."""

REPLY_PRIMING = 3
"""Tokens every request costs for the assistant's reply header."""

IMAGE_TOKENS = 85
"""Tokens counted per image part: OpenAI's low-detail cost, a lower bound for larger images."""


def estimate_text_tokens(text: str) -> int:
    """Return the estimated token count of `text` (see the module docstring for the error)."""
    if not text:
        return 0
    chars = len(text)
    if text.isascii():
        return (chars + 3) // 4
    nbytes = len(text.encode("utf-8", "surrogatepass"))
    # ceil((3 * bytes - chars) / 8): CJK ~1 token per character, ASCII ~4 characters per token.
    return (3 * nbytes - chars + 7) // 8


def estimate_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Return the estimated prompt tokens of a chat request's `messages`.

    Text parts count by `estimate_text_tokens`, image parts as `IMAGE_TOKENS`, names and
    tool calls by their text; each message adds `MESSAGE_OVERHEAD` and the request
    `REPLY_PRIMING`.
    """
    total = REPLY_PRIMING
    for message in messages:
        total += MESSAGE_OVERHEAD
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            total += _parts_tokens(content)
        name = message.get("name")
        if isinstance(name, str):
            total += estimate_text_tokens(name)
        tool_calls = message.get("tool_calls")
        if tool_calls:
            total += estimate_text_tokens(json.dumps(tool_calls, ensure_ascii=False, default=str))
    return total


def _parts_tokens(parts: list[Any]) -> int:
    total = 0
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            total += estimate_text_tokens(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            total += IMAGE_TOKENS
        else:
            total += estimate_text_tokens(json.dumps(part, ensure_ascii=False, default=str))
    return total


def estimate_prompt_tokens(prompt: Any) -> int:
    """Return the estimated tokens of a completions `prompt` or an embeddings `input`.

    Either API takes a string, a list of strings, a list of token ids, or a list of such
    lists: text counts by `estimate_text_tokens`, a token id as one token. There is no chat
    framing (no `MESSAGE_OVERHEAD`, no `REPLY_PRIMING`); anything else counts as 0.
    """
    if isinstance(prompt, str):
        return estimate_text_tokens(prompt)
    if isinstance(prompt, list):
        total = 0
        for item in prompt:
            if isinstance(item, int):
                total += 1
            else:
                total += estimate_prompt_tokens(item)
        return total
    return 0
