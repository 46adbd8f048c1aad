"""Chat-completion requests built from input rows, and the fingerprints that spot changes.

A row's prompt comes from, in this order: its own body when the input is OpenAI batch lines;
the template when one is given (`str.format` fields name columns: "计算 {expression} 的结果");
the row's `messages` (a list of {role, content}, or that list as JSON text); the row's
`prompt` string, sent as one user message.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import jsoncodec
from .errors import ConfigError, InputError, JournalError
from .records import RequestSpec, Row
from .tokens import estimate_tokens

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
"""The only batch-line `url` squall sends."""

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
"""Message roles squall passes through."""

_RESERVED_PARAMS = {
    "model": "set the model with --model or in the endpoint's config",
    "messages": "the prompt comes from the rows (or --template)",
}


ROW_FINGERPRINT = "2"
"""The row fingerprint scheme new journals record; `row_fingerprinter` knows every one."""

# Built once: json.dumps(**options) builds an encoder per call, a third of a fingerprint's cost.
_FINGERPRINT_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


def fingerprint(data: Mapping[str, Any]) -> str:
    """Return a 32-hex-digit hash of a row's content, independent of key order (scheme 2).

    The hash of orjson's sorted compact text, about eight times cheaper than scheme 1's; a row
    that text cannot represent exactly (NaN, a lone surrogate, a huge integer) is hashed as
    scheme 1 hashes it, so two different rows never share a text.
    """
    text = jsoncodec.dumps_sorted(data)
    if text is None:
        return fingerprint_v1(data)
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def fingerprint_v1(data: Mapping[str, Any]) -> str:
    """Return scheme 1's hash of a row (`json.dumps`, sorted): journals made before scheme 2
    (which record no scheme) hold these."""
    try:
        text = _FINGERPRINT_JSON.encode(data)
    except TypeError:  # keys of mixed types cannot be sorted: compare them as text
        text = _FINGERPRINT_JSON.encode({str(k): v for k, v in data.items()})
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


_ROW_FINGERPRINTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "1": fingerprint_v1,
    "2": fingerprint,
}


def row_fingerprinter(scheme: str) -> Callable[[Mapping[str, Any]], str]:
    """Return the row fingerprint function of `scheme` (as a journal records it).

    Raises:
        JournalError: the scheme is unknown: the journal was made by a newer squall.
    """
    try:
        return _ROW_FINGERPRINTS[scheme]
    except KeyError:
        raise JournalError(
            f"the journal's rows are fingerprinted by scheme {scheme!r}, which this squall "
            "does not know: it was made by a newer squall; upgrade to resume it"
        ) from None


@dataclass(frozen=True, slots=True)
class SettingsFingerprint:
    """The settings that shape every request, and their hash, for the journal to compare.

    Attributes:
        digest: a 32-hex-digit hash of `settings`.
        settings: template, system, max_tokens, temperature, params and model, as given.
    """

    digest: str
    settings: dict[str, Any]

    def changes_from(self, old: Mapping[str, Any]) -> list[str]:
        """Return one line per setting that differs from `old`, e.g. "max_tokens: 64 -> 128"."""
        lines = []
        for key in sorted(set(old) | set(self.settings)):
            before, after = old.get(key), self.settings.get(key)
            if _canonical(before) != _canonical(after):
                lines.append(f"{key}: {_short(before)} -> {_short(after)}")
        return lines


def settings_fingerprint(
    *,
    template: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    params: Mapping[str, Any],
    model: str | None,
) -> SettingsFingerprint:
    """Return the hash and readable form of the settings that shape requests."""
    settings: dict[str, Any] = {
        "template": template,
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "params": dict(params),
        "model": model,
    }
    digest = hashlib.blake2b(_canonical(settings).encode("utf-8"), digest_size=16).hexdigest()
    return SettingsFingerprint(digest=digest, settings=settings)


def check_template(
    template: str,
    columns: Sequence[str],
    *,
    source_name: str | None = None,
    line: int | None = None,
) -> list[str]:
    """Return the column names `template` uses, after checking each exists in `columns`.

    Raises:
        InputError: a field names a column that does not exist (the message lists those
            that do), or the template's braces are malformed.
    """
    fields = template_fields(template)
    for field in fields:
        if field not in columns:
            raise _missing_field(field, columns, source_name, line)
    return fields


def template_fields(template: str) -> list[str]:
    """Return the column names a template's `{fields}` use, in order, without repeats.

    Raises:
        ConfigError: the braces are malformed, or a field has no name (`{}`).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"the template is malformed ({exc}): fields look like {{column}}; to write a "
            "literal brace, double it: {{ or }}"
        ) from None
    fields: list[str] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        base = field.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise ConfigError(
                f"the template has a field without a column name ({{{field}}}): name the "
                "column, like {prompt}; to write a literal brace, double it: {{ or }}"
            )
        if base not in fields:
            fields.append(base)
    return fields


def _missing_field(
    field: str, columns: Sequence[str], source_name: str | None, line: int | None
) -> InputError:
    hint = ""
    if not field.isidentifier():
        hint = " If the braces were meant literally (as in JSON), double them: {{ and }}."
    return InputError(
        f"the template uses {{{field}}} but the row has no such column; columns: "
        f"{_list_columns(columns)}.{hint}",
        file=source_name,
        line=line,
        field=field,
    )


class RequestBuilder:
    """Turns rows into chat-completion request bodies (without `model`)."""

    def __init__(
        self,
        *,
        template: str | None,
        system: str | None,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any],
        source_name: str,
    ) -> None:
        """Check the settings once, so `build` stays fast.

        Raises:
            ConfigError: the template is malformed, or `params` sets `model` or `messages`.
        """
        for key, why in _RESERVED_PARAMS.items():
            if key in params:
                raise ConfigError(f"params may not set {key!r}: {why}")
        if template is not None:
            template_fields(template)
        self.template = template
        self.system = system
        self.source_name = source_name
        extras = dict(params)
        if max_tokens is not None:
            extras["max_tokens"] = max_tokens
        if temperature is not None:
            extras["temperature"] = temperature
        self._extras = extras
        self._system_message = {"role": "system", "content": system} if system else None

    def build(self, row: Row, *, batch: bool) -> RequestSpec:
        """Return the request for `row`; `batch` says the input is OpenAI batch lines.

        Raises:
            InputError: the row has no usable prompt; the message names the file, line and
                field, and what to do.
        """
        data = row.data
        if batch:
            return self._build_batch(row)
        if self.template is not None:
            messages: list[dict[str, Any]] = [{"role": "user", "content": self._render(row)}]
        elif data.get("messages") is not None:
            messages = self._row_messages(row)
        elif "prompt" in data:
            messages = [{"role": "user", "content": self._row_prompt(row)}]
        else:
            raise InputError(
                f"has no prompt: give each row a 'prompt' or 'messages' field, or pass "
                f"--template to build one from the columns ({_list_columns(data)}), e.g. "
                f"--template '{_example_template(data)}'",
                file=self.source_name,
                line=row.line,
            )
        system = self._system_message
        if system is not None and messages[0].get("role") != "system":
            messages = [system, *messages]
        body: dict[str, Any] = {"messages": messages, **self._extras}
        return RequestSpec(
            index=row.index,
            line=row.line,
            body=body,
            est_prompt_tokens=estimate_tokens(messages),
        )

    def settings_fingerprint(self, model: str | None) -> SettingsFingerprint:
        """Return this builder's settings fingerprint, with the model the run uses."""
        extras = dict(self._extras)
        max_tokens = extras.pop("max_tokens", None)
        temperature = extras.pop("temperature", None)
        return settings_fingerprint(
            template=self.template,
            system=self.system,
            max_tokens=max_tokens,
            temperature=temperature,
            params=extras,
            model=model,
        )

    def _render(self, row: Row) -> str:
        assert self.template is not None
        try:
            text = self.template.format_map(row.data)
        except KeyError as exc:
            field = str(exc.args[0]) if exc.args else "?"
            if field not in row.data:
                raise _missing_field(field, list(row.data), self.source_name, row.line) from None
            raise self._template_error(row, f"a field's key is missing ({exc})") from None
        except (AttributeError, IndexError, ValueError, TypeError) as exc:
            raise self._template_error(row, str(exc)) from None
        if not text.strip():
            raise InputError(
                "the template gave an empty prompt: check the row's values",
                file=self.source_name,
                line=row.line,
            )
        return text

    def _template_error(self, row: Row, detail: str) -> InputError:
        return InputError(
            f"the template cannot be filled from this row ({detail}); CSV values are text, so "
            "format specs like {x:.2f} need JSON or Parquet numbers",
            file=self.source_name,
            line=row.line,
        )

    def _row_prompt(self, row: Row) -> str:
        prompt = row.data["prompt"]
        if not isinstance(prompt, str):
            what = "null" if prompt is None else f"a {type(prompt).__name__}"
            raise InputError(
                f"prompt is {what}, not text: give text, or use --template '{{prompt}}' to "
                "format it",
                file=self.source_name,
                line=row.line,
                field="prompt",
            )
        if not prompt.strip():
            raise InputError(
                "prompt is empty: give the row some text, or remove it",
                file=self.source_name,
                line=row.line,
                field="prompt",
            )
        return prompt

    def _row_messages(self, row: Row) -> list[dict[str, Any]]:
        messages = row.data["messages"]
        if isinstance(messages, str):
            # CSV cells hold text: accept the messages list written as JSON.
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"messages is text that is not JSON ({exc.msg} at column {exc.colno}): "
                    'give a JSON list like [{"role": "user", "content": "..."}]',
                    file=self.source_name,
                    line=row.line,
                    field="messages",
                ) from None
        return check_messages(messages, source_name=self.source_name, line=row.line)

    def _build_batch(self, row: Row) -> RequestSpec:
        data = row.data

        def fail(message: str, field: str) -> InputError:
            return InputError(message, file=self.source_name, line=row.line, field=field)

        url = data.get("url")
        if url != CHAT_COMPLETIONS_URL:
            raise fail(
                f"url is {url!r}; squall sends only {CHAT_COMPLETIONS_URL} requests: remove "
                "other lines or send them with another tool",
                "url",
            )
        source = data.get("body")
        if not isinstance(source, Mapping):
            raise fail("body must be a JSON object", "body")
        body = {**self._extras, **source}
        model = body.pop("model", None)
        if model is not None and not isinstance(model, str):
            raise fail("body.model must be a string", "body.model")
        if "messages" not in body:
            raise fail(
                "body has no messages: a chat-completion body needs a messages list",
                "body.messages",
            )
        messages = check_messages(
            body["messages"], source_name=self.source_name, line=row.line, field="body.messages"
        )
        system = self._system_message
        if system is not None and messages[0].get("role") != "system":
            messages = [system, *messages]
        body["messages"] = messages
        custom_id = data.get("custom_id")
        return RequestSpec(
            index=row.index,
            line=row.line,
            body=body,
            est_prompt_tokens=estimate_tokens(messages),
            custom_id=custom_id if isinstance(custom_id, str) else None,
            model=model,
        )


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


def _list_columns(columns: Mapping[str, Any] | Sequence[str]) -> str:
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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
