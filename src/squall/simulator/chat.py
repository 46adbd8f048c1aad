"""The chat completions request kind: `POST /v1/chat/completions`, parsed and answered.

`ChatRequest.parse(body)` reads a request leniently (a bad body becomes `problem`, answered
400, never an exception); `answer_body()` builds the `chat.completion` object a successful
request gets. This module is the model for the other kinds (completions.py, embeddings.py):
one module like it, plus one entry in `routes.REQUEST_KINDS`.
"""

from __future__ import annotations

import time
from typing import Any

from .answers import completion_tokens, expected_answer, prompt_digest, prompt_tokens, read_payload

PATH = "/v1/chat/completions"


def message_text(content: Any) -> str:
    """Return the text of one message's `content` (a string, or OpenAI content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts count
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


class ChatRequest:
    """One chat request, parsed leniently: what the simulator needs to answer or refuse it.

    Attributes:
        model: the model asked for ("" when the body was unreadable).
        digest: sha256 hex of the last user message ("" when there was none).
        problem: why the body is refused with 400 ("" when it is fine).
        cost: tokens charged up front against the key's tokens-per-minute limit.
    """

    __slots__ = ("answer", "cost", "digest", "max_tokens", "model", "problem", "texts")

    inputs = 1
    """How many prompts it carries: one conversation."""

    def __init__(self, body: dict[str, Any], *, readable: bool) -> None:
        model = body.get("model")
        self.model = model if isinstance(model, str) else ""
        self.texts: list[str] = []
        last_user: str | None = None
        messages = body.get("messages")
        for m in messages if isinstance(messages, list) else ():
            if isinstance(m, dict):
                text = message_text(m.get("content"))
                self.texts.append(text)
                if m.get("role") == "user":
                    last_user = text
        self.digest = prompt_digest(last_user) if last_user is not None else ""
        self.answer = expected_answer(last_user) if last_user is not None else ""
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        self.max_tokens: int | None = max_tokens if type(max_tokens) is int else None
        self.problem = ""
        if not readable:
            self.problem = "We could not parse the JSON body of your request."
        elif not self.model:
            self.problem = "you must provide a model parameter"
        elif last_user is None:
            self.problem = "'messages' must be a list holding at least one user message"
        elif max_tokens is not None and (self.max_tokens is None or self.max_tokens < 1):
            self.problem = "max_tokens must be an integer of at least 1"
        elif body.get("stream"):
            self.problem = "this simulator does not stream; send stream=false"
        self.cost = 0
        if not self.problem:
            # Charged up front like OpenAI: max_tokens when given, else what the answer uses.
            done = self.max_tokens or completion_tokens(self.answer)
            self.cost = prompt_tokens(self.texts) + done

    @classmethod
    def parse(cls, raw: bytes) -> ChatRequest:
        """Return the request a body holds (an unreadable body gives one with a `problem`)."""
        payload, readable = read_payload(raw)
        return cls(payload, readable=readable)

    def contains(self, marker: str) -> bool:
        """Return whether any message's text holds `marker` (the SQUALL_* triggers)."""
        return any(marker in t for t in self.texts)

    def answer_body(self, number: int) -> dict[str, Any]:
        """Return the chat.completion object answering this request, the `number`-th answer."""
        answer = self.answer
        done, finish_reason = completion_tokens(answer), "stop"
        if self.max_tokens is not None and self.max_tokens < done:
            answer, done = answer[: self.max_tokens * 4], self.max_tokens
            finish_reason = "length"
        prompt = prompt_tokens(self.texts)
        return {
            "id": f"chatcmpl-sim{number:010d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": done,
                "total_tokens": prompt + done,
            },
            "system_fingerprint": "squall-simulator",
        }
