"""Chat completions (`/chat/completions`): the messages built from a row, and the answer read.

A row's messages come from, in this order: its own body when the input is OpenAI batch lines;
the template when one is given (one user message); the row's `messages` (a list of
{role, content}, or that list as JSON text); the row's `prompt` string, sent as one user
message. A system prompt is put first unless the messages start with one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import jsoncodec
from ..errors import ContentFiltered, InputError, MalformedResponse
from ..records import OUTPUT_FIELDS, Completion, Row, RowResult
from ..tokens import estimate_tokens

if TYPE_CHECKING:
    from . import RequestSettings

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Message roles squall passes through."""


class ChatOperation:
    """The chat-completion request kind (see the module docstring)."""

    name = "chat"
    path = "/chat/completions"
    batch_url = "/v1/chat/completions"
    reserved_params: Mapping[str, str] = {
        "messages": "the prompt comes from the rows (or --template)",
    }
    output_columns: tuple[str, ...] = OUTPUT_FIELDS
    output_types: Mapping[str, str] = {
        "response": "string",
        "finish_reason": "string",
        "endpoint": "string",
        "error": "string",
        "prompt_tokens": "int64",
        "completion_tokens": "int64",
        "attempts": "int64",
        "latency_s": "float64",
    }

    def build(self, row: Row, text: str | None, settings: RequestSettings) -> dict[str, Any]:
        """Return the chat body for `row`: its messages, then the run's extras.

        Raises:
            InputError: the row has no usable prompt; the message names the file, line and
                field, and what to do.
        """
        data = row.data
        if text is not None:
            messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
        elif data.get("messages") is not None:
            messages = _row_messages(row, settings.source_name)
        elif "prompt" in data:
            messages = [{"role": "user", "content": row_prompt(row, settings.source_name)}]
        else:
            raise InputError(
                f"has no prompt: give each row a 'prompt' or 'messages' field, or pass "
                f"--template to build one from the columns ({list_columns(data)}), e.g. "
                f"--template '{_example_template(data)}'",
                file=settings.source_name,
                line=row.line,
            )
        system = settings.system_message
        if system is not None and messages[0].get("role") != "system":
            messages = [system, *messages]
        return {"messages": messages, **settings.extras}

    def build_batch(
        self, row: Row, body: dict[str, Any], settings: RequestSettings
    ) -> dict[str, Any]:
        """Return the batch line's body with its messages checked and the system prompt added.

        Raises:
            InputError: the body has no messages, or they are malformed.
        """
        if "messages" not in body:
            raise InputError(
                "body has no messages: a chat-completion body needs a messages list",
                file=settings.source_name,
                line=row.line,
                field="body.messages",
            )
        messages = check_messages(
            body["messages"],
            source_name=settings.source_name,
            line=row.line,
            field="body.messages",
        )
        system = settings.system_message
        if system is not None and messages[0].get("role") != "system":
            messages = [system, *messages]
        body["messages"] = messages
        return body

    def estimate_tokens(self, body: Mapping[str, Any]) -> int:
        """Return the estimated prompt tokens of the body's messages (see squall.tokens)."""
        return estimate_tokens(body["messages"])

    def parse(self, raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> Completion:
        """Return the Completion of a chat answer: choices[0]'s text and finish, and usage.

        A legacy completion's `choices[0].text` is read when there is no message.

        Raises:
            MalformedResponse: the body is not JSON or has no choices[0] object.
            ContentFiltered: the answer finished by content_filter with no text.
        """
        data, choice = first_choice(raw, redact, "a chat completion")
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if text is None and "text" in choice:
            text = choice["text"]
        return completion_of(raw, data, text, choice.get("finish_reason"), keep_raw)

    def output_fields(self, result: RowResult) -> dict[str, Any]:
        """Return the output columns for `result` (squall.records.OUTPUT_FIELDS)."""
        return result.output_fields()

    def rebuild_body(self, result: RowResult) -> dict[str, Any]:
        """Return a `chat.completion` object holding the answer, finish and usage recorded."""
        usage = recorded_usage(result)
        return {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.response},
                    "finish_reason": result.finish_reason,
                }
            ],
            "usage": usage,
        }


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) else None


def recorded_usage(result: RowResult) -> dict[str, int] | None:
    """Return the `usage` object of a journaled answer (None when the provider gave none)."""
    if result.prompt_tokens is None and result.completion_tokens is None:
        return None
    prompt, completion = result.prompt_tokens or 0, result.completion_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def first_choice(
    raw: bytes, redact: Callable[[str], str], kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return an answer's parsed body and its `choices[0]` (chat and completions alike).

    Raises:
        MalformedResponse: the body is not JSON or has no choices[0] object.
    """
    try:
        data = jsoncodec.loads(raw)
        choice = data["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:120].decode("utf-8", "replace")
        raise MalformedResponse(
            redact(f"the body is not {kind}: {snippet!r}"), status=200
        ) from None
    if not isinstance(choice, dict):
        raise MalformedResponse("the body's choices[0] is not an object", status=200)
    return data, choice


def completion_of(
    raw: bytes, data: Mapping[str, Any], text: Any, finish: Any, keep_raw: bool
) -> Completion:
    """Return the Completion of an answer whose text and finish reason were read.

    Raises:
        ContentFiltered: the answer finished by content_filter with no text.
    """
    if finish == "content_filter" and not text:
        raise ContentFiltered("the provider filtered this content", status=200)
    usage = data.get("usage")
    if not isinstance(usage, dict):  # absent, null or junk: the answer still counts
        usage = {}
    request_id = data.get("id")
    return Completion(
        text=text if isinstance(text, str) or text is None else json.dumps(text),
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        raw=raw.decode("utf-8", "replace") if keep_raw else None,
        request_id=request_id if isinstance(request_id, str) else None,
    )


def row_prompt(row: Row, source_name: str) -> str:
    """Return the row's `prompt` column, after checking it is non-empty text.

    Raises:
        InputError: the prompt is not text, or is blank.
    """
    prompt = row.data["prompt"]
    if not isinstance(prompt, str):
        what = "null" if prompt is None else f"a {type(prompt).__name__}"
        raise InputError(
            f"prompt is {what}, not text: give text, or use --template '{{prompt}}' to format it",
            file=source_name,
            line=row.line,
            field="prompt",
        )
    if not prompt.strip():
        raise InputError(
            "prompt is empty: give the row some text, or remove it",
            file=source_name,
            line=row.line,
            field="prompt",
        )
    return prompt


def _row_messages(row: Row, source_name: str) -> list[dict[str, Any]]:
    messages = row.data["messages"]
    if isinstance(messages, str):
        # CSV cells hold text: accept the messages list written as JSON.
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"messages is text that is not JSON ({exc.msg} at column {exc.colno}): "
                'give a JSON list like [{"role": "user", "content": "..."}]',
                file=source_name,
                line=row.line,
                field="messages",
            ) from None
    return check_messages(messages, source_name=source_name, line=row.line)


def check_messages(
    messages: Any,
    *,
    source_name: str | None = None,
    line: int | None = None,
    field: str = "messages",
) -> list[dict[str, Any]]:
    """Return `messages` after checking it is a non-empty list of {role, content} objects.

    Raises:
        InputError: naming the message's position and what is wrong with it.
    """

    def fail(message: str, field: str) -> InputError:
        return InputError(message, file=source_name, line=line, field=field)

    if not isinstance(messages, list) or not messages:
        raise fail('must be a non-empty list like [{"role": "user", "content": "..."}]', field)
    for i, message in enumerate(messages):
        at = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise fail("must be an object with role and content", at)
        role = message.get("role")
        if role not in ROLES:
            raise fail(f"role is {role!r}: use one of {', '.join(sorted(ROLES))}", at)
        content = message.get("content")
        if isinstance(content, str):
            if not content.strip() and role == "user":
                raise fail("content is empty: give the message some text", at)
        elif isinstance(content, list):
            if not content:
                raise fail("content is an empty list", at)
        elif content is None:
            if role != "assistant" or not message.get("tool_calls"):
                raise fail("has no content", at)
        else:
            raise fail(f"content is a {type(content).__name__}: give text or a list of parts", at)
    return messages


def list_columns(columns: Mapping[str, Any] | Sequence[str]) -> str:
    """Return the column names for a message: the first 20, then how many in all."""
    names = list(columns)
    if not names:
        return "none"
    shown = ", ".join(names[:20])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 20 else "")


def _example_template(data: Mapping[str, Any]) -> str:
    for name in data:
        if isinstance(name, str) and name.isidentifier():
            return f"... {{{name}}} ..."
    return "... {column} ..."
