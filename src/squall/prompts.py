"""Requests built from input rows, and the fingerprints that spot changes.

A row's request comes from its own body when the input is OpenAI batch lines, else from the
template when one is given (`str.format` fields name columns: "计算 {expression} 的结果"),
else from the row's own fields as the operation reads them (chat: `messages`, then
`prompt`; see squall.operations.chat).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import jsoncodec, openai_batch, operations
from .errors import ConfigError, InputError, JournalError
from .operations import CHAT, Operation, RequestSettings
from .operations.chat import ROLES, check_messages, list_columns
from .records import RequestSpec, Row

CHAT_COMPLETIONS_URL = CHAT.batch_url
"""The chat operation's batch-line `url` (see squall.operations for every one)."""

_RESERVED_PARAMS = {"model": "set the model with --model or in the endpoint's config"}

__all__ = [
    "CHAT_COMPLETIONS_URL",
    "ROLES",
    "ROW_FINGERPRINT",
    "RequestBuilder",
    "SettingsFingerprint",
    "check_messages",
    "check_template",
    "fingerprint",
    "fingerprint_v1",
    "row_fingerprinter",
    "settings_fingerprint",
    "template_fields",
]


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
    """Return scheme 1's hash of a row (`json.dumps`, sorted).

    Journals made before scheme 2 (which record no scheme) hold these.
    """
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
        settings: template, system, max_tokens, temperature, params and model, as given
            (and api, when it is not chat).
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
    api: str = "chat",
) -> SettingsFingerprint:
    """Return the hash and readable form of the settings that shape requests.

    `api` (the operation's name) is part of them only when it is not chat, so journals made
    before there were other kinds keep their fingerprint.
    """
    settings: dict[str, Any] = {
        "template": template,
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "params": dict(params),
        "model": model,
    }
    if api != "chat":
        settings["api"] = api
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
        f"{list_columns(columns)}.{hint}",
        file=source_name,
        line=line,
        field=field,
    )


class RequestBuilder:
    """Turns rows into request bodies (without `model`) of one operation (chat by default).

    The generic part lives here: settings checked once, the template rendered, batch lines
    read through `squall.openai_batch`; the operation builds the body from that.
    """

    def __init__(
        self,
        *,
        template: str | None,
        system: str | None,
        max_tokens: int | None,
        temperature: float | None,
        params: Mapping[str, Any],
        source_name: str,
        operation: Operation | str = "chat",
    ) -> None:
        """Check the settings once, so `build` stays fast.

        Raises:
            ConfigError: the template is malformed, `params` sets `model` or a field the
                operation fills itself (chat: `messages`), or the operation is unknown.
        """
        op = operations.operation(operation) if isinstance(operation, str) else operation
        for key, why in {**_RESERVED_PARAMS, **op.reserved_params}.items():
            if key in params:
                raise ConfigError(f"params may not set {key!r}: {why}")
        if template is not None:
            template_fields(template)
        self.operation = op
        self.template = template
        self.system = system
        self.source_name = source_name
        extras = dict(params)
        if max_tokens is not None:
            extras["max_tokens"] = max_tokens
        if temperature is not None:
            extras["temperature"] = temperature
        self._extras = extras
        self._settings = RequestSettings(system=system, extras=extras, source_name=source_name)

    def build(self, row: Row, *, batch: bool) -> RequestSpec:
        """Return the request for `row`; `batch` says the input is OpenAI batch lines.

        Raises:
            InputError: the row has no usable prompt; the message names the file, line and
                field, and what to do.
        """
        if batch:
            return self._build_batch(row)
        op = self.operation
        text = self._render(row) if self.template is not None else None
        body = op.build(row, text, self._settings)
        return RequestSpec(
            index=row.index, line=row.line, body=body, est_prompt_tokens=op.estimate_tokens(body)
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
            api=self.operation.name,
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

    def _build_batch(self, row: Row) -> RequestSpec:
        op = self.operation
        body, model = openai_batch.request_body(row, op, self._extras, self.source_name)
        body = op.build_batch(row, body, self._settings)
        return RequestSpec(
            index=row.index,
            line=row.line,
            body=body,
            est_prompt_tokens=op.estimate_tokens(body),
            custom_id=openai_batch.custom_id_of(row.data),
            model=model,
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
