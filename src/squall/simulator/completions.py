"""The legacy completions request kind: `POST /v1/completions`, parsed and answered.

`prompt` is one text or a list of texts; each gets `expected_answer(text)`, `n` times
(choice `index` = prompt's position * n + the copy's), truncated to `max_tokens` (16 when not
given, as OpenAI's default). `echo` puts the prompt before the answer; `suffix` is accepted
and ignored; `logprobs` (0 to 5) adds a deterministic logprobs object per choice.
"""

from __future__ import annotations

import time
from typing import Any

from .answers import (
    completion_tokens,
    expected_answer,
    prompt_digest,
    prompt_tokens,
    read_payload,
    text_list,
)

PATH = "/v1/completions"

DEFAULT_MAX_TOKENS = 16
"""The max_tokens a completions request gets when it gives none (OpenAI's default)."""


class CompletionRequest:
    """One completions request, parsed leniently (see `chat.ChatRequest` for the attributes).

    Attributes:
        inputs: how many prompts it carried.
    """

    __slots__ = (
        "cost",
        "digest",
        "echo",
        "inputs",
        "logprobs",
        "max_tokens",
        "model",
        "n",
        "problem",
        "texts",
    )

    def __init__(self, body: dict[str, Any], *, readable: bool) -> None:
        model = body.get("model")
        self.model = model if isinstance(model, str) else ""
        texts = text_list(body.get("prompt"))
        ok = texts is not None
        self.texts: list[str] = texts if texts is not None else []
        self.inputs = len(self.texts)
        self.digest = prompt_digest("\n".join(self.texts)) if ok else ""
        max_tokens = body.get("max_tokens")
        self.max_tokens = max_tokens if type(max_tokens) is int else DEFAULT_MAX_TOKENS
        n, logprobs = body.get("n", 1), body.get("logprobs")
        self.n = n if type(n) is int else 1
        self.logprobs: int | None = logprobs if type(logprobs) is int else None
        self.echo = body.get("echo") is True
        self.problem = _problem(body, readable, self.model, ok)
        self.cost = 0
        if not self.problem:
            self.cost = prompt_tokens(self.texts) + self.max_tokens * self.n * self.inputs

    @classmethod
    def parse(cls, raw: bytes) -> CompletionRequest:
        """Return the request a body holds (an unreadable body gives one with a `problem`)."""
        payload, readable = read_payload(raw)
        return cls(payload, readable=readable)

    def contains(self, marker: str) -> bool:
        """Return whether any prompt holds `marker` (the SQUALL_* triggers)."""
        return any(marker in t for t in self.texts)

    def answer_body(self, number: int) -> dict[str, Any]:
        """Return the text_completion object answering this request, the `number`-th answer."""
        choices: list[dict[str, Any]] = []
        done = 0
        for i, text in enumerate(self.texts):
            answer = expected_answer(text)
            used, finish_reason = completion_tokens(answer), "stop"
            if self.max_tokens < used:
                answer, used, finish_reason = (
                    answer[: self.max_tokens * 4],
                    self.max_tokens,
                    "length",
                )
            for j in range(self.n):
                choices.append(
                    {
                        "text": text + answer if self.echo else answer,
                        "index": i * self.n + j,
                        "logprobs": None if self.logprobs is None else self._logprobs(answer),
                        "finish_reason": finish_reason,
                    }
                )
                done += used
        prompt = prompt_tokens(self.texts)
        return {
            "id": f"cmpl-sim{number:010d}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": done,
                "total_tokens": prompt + done,
            },
        }

    def _logprobs(self, answer: str) -> dict[str, Any]:
        """Return a logprobs object for `answer`: 4-character tokens, logprob -0.01 * place."""
        tokens = [answer[k : k + 4] for k in range(0, len(answer), 4)] or [""]
        logprobs = [round(-0.01 * (k + 1), 4) for k in range(len(tokens))]
        top = None
        if self.logprobs:
            top = [{t: lp} for t, lp in zip(tokens, logprobs, strict=True)]
        return {
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": top,
            "text_offset": [4 * k for k in range(len(tokens))],
        }


def _problem(body: dict[str, Any], readable: bool, model: str, prompt_ok: bool) -> str:
    """Return why the body is refused with 400 ("" when it is fine)."""
    max_tokens, n, logprobs = body.get("max_tokens"), body.get("n", 1), body.get("logprobs")
    if not readable:
        return "We could not parse the JSON body of your request."
    if not model:
        return "you must provide a model parameter"
    if not prompt_ok:
        return (
            "'prompt' must be a non-empty string or a list of strings (this simulator takes text)"
        )
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
        return "max_tokens must be an integer of at least 1"
    if type(n) is not int or not 1 <= n <= 128:
        return "n must be an integer from 1 to 128"
    if logprobs is not None and (type(logprobs) is not int or not 0 <= logprobs <= 5):
        return "logprobs must be an integer from 0 to 5"
    if body.get("suffix") is not None and not isinstance(body.get("suffix"), str):
        return "suffix must be a string"
    if body.get("stream"):
        return "this simulator does not stream; send stream=false"
    return ""
