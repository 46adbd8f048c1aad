"""Legacy completions (`/completions`): a row's text sent as `prompt`, `choices[0].text` read.

A row's prompt comes from, in this order: its own body when the input is OpenAI batch lines;
the template when one is given; the row's `prompt` string. There are no messages, so there is
no system prompt: a run asking for one is refused (put it in the template instead).

`logprobs`, `echo`, `suffix` and `n` pass through `params` untouched. `echo` and `suffix` only
change what `text` holds; `logprobs` and `n > 1` add output columns, on the operation that
`with_params(params)` returns (the registry's one has none):

    logprobs   choices[0].logprobs, as the provider gave it
    choices    every choice's text, in index order (when n > 1)

Those columns are read back from the raw body, which such an operation keeps for every row
(`Completion.raw`, journaled as the row's raw answer); without them nothing extra is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import jsoncodec
from ..errors import ConfigError, InputError
from ..records import OUTPUT_FIELDS, Completion, Row, RowResult
from ..tokens import estimate_prompt_tokens
from .chat import completion_of, first_choice, list_columns, recorded_usage, row_prompt

if TYPE_CHECKING:
    from . import RequestSettings

EXTRA_COLUMNS: tuple[str, ...] = ("logprobs", "choices")
"""The output columns `with_params` may add, in this order."""

_OUTPUT_TYPES: Mapping[str, str] = {
    "response": "string",
    "finish_reason": "string",
    "endpoint": "string",
    "error": "string",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
    "attempts": "int64",
    "latency_s": "float64",
}


class CompletionsOperation:
    """The legacy completions request kind (see the module docstring).

    Args:
        extra_columns: output columns past squall's own, from `EXTRA_COLUMNS`.
    """

    name = "completions"
    path = "/completions"
    batch_url = "/v1/completions"
    reserved_params: Mapping[str, str] = {
        "prompt": "the prompt comes from the rows (or --template)",
        "stream": "squall reads whole answers, not streams",
    }

    def __init__(self, extra_columns: tuple[str, ...] = ()) -> None:
        unknown = set(extra_columns) - set(EXTRA_COLUMNS)
        if unknown:
            raise ValueError(f"unknown completions columns: {sorted(unknown)}")
        self.extra_columns = tuple(c for c in EXTRA_COLUMNS if c in extra_columns)
        self.output_columns: tuple[str, ...] = OUTPUT_FIELDS + self.extra_columns
        self.output_types: Mapping[str, str] = _OUTPUT_TYPES

    def __repr__(self) -> str:
        return f"CompletionsOperation(extra_columns={self.extra_columns!r})"

    def with_params(self, params: Mapping[str, Any]) -> CompletionsOperation:
        """Return the operation whose output columns hold what `params` asks for.

        `logprobs` set (not None, not False) adds the `logprobs` column; `n` above 1 adds
        `choices`. Without either, the registry's operation itself is returned.
        """
        wanted = []
        logprobs = params.get("logprobs")
        if logprobs is not None and logprobs is not False:  # 0 asks for them too
            wanted.append("logprobs")
        n = params.get("n")
        if isinstance(n, int) and n > 1:
            wanted.append("choices")
        if tuple(wanted) == self.extra_columns:
            return self
        return CompletionsOperation(tuple(wanted))

    def build(self, row: Row, text: str | None, settings: RequestSettings) -> dict[str, Any]:
        """Return the completions body for `row`: its prompt, then the run's extras.

        Raises:
            InputError: the row has no usable prompt (the message names file, line, field).
            ConfigError: the run gives a system prompt, which completions cannot carry.
        """
        _refuse_system(settings)
        if text is None:
            if "prompt" not in row.data:
                raise InputError(
                    f"has no prompt: give each row a 'prompt' field, or pass --template to "
                    f"build one from the columns ({list_columns(row.data)})",
                    file=settings.source_name,
                    line=row.line,
                )
            text = row_prompt(row, settings.source_name)
        return {"prompt": text, **settings.extras}

    def build_batch(
        self, row: Row, body: dict[str, Any], settings: RequestSettings
    ) -> dict[str, Any]:
        """Return the batch line's body after checking its prompt.

        Raises:
            InputError: the body has no prompt, or it is not text (or a list of texts or
                token ids).
            ConfigError: the run gives a system prompt.
        """
        _refuse_system(settings)
        prompt = body.get("prompt")
        if not _is_prompt(prompt):
            what = "no prompt" if prompt is None else f"a prompt that is a {type(prompt).__name__}"
            raise InputError(
                f"body has {what}: a completions body needs a prompt (text, a list of texts, "
                "or token ids)",
                file=settings.source_name,
                line=row.line,
                field="body.prompt",
            )
        return body

    def estimate_tokens(self, body: Mapping[str, Any]) -> int:
        """Return the estimated prompt tokens of the body's prompt and suffix."""
        return estimate_prompt_tokens(body["prompt"]) + estimate_prompt_tokens(body.get("suffix"))

    def parse(self, raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> Completion:
        """Return the Completion of a completions answer: choices[0]'s text and finish, usage.

        The raw body is kept when `keep_raw` is set or the operation has extra columns.

        Raises:
            MalformedResponse: the body is not JSON or has no choices[0] object.
            ContentFiltered: the answer finished by content_filter with no text.
        """
        data, choice = first_choice(raw, redact, "a text completion")
        keep = keep_raw or bool(self.extra_columns)
        return completion_of(raw, data, choice.get("text"), choice.get("finish_reason"), keep)

    def output_fields(self, result: RowResult) -> dict[str, Any]:
        """Return squall's output columns for `result`, then the extra ones from its raw body."""
        fields = result.output_fields()
        if self.extra_columns:
            fields.update(extra_fields(result.raw, self.extra_columns))
        return fields

    def rebuild_body(self, result: RowResult) -> dict[str, Any]:
        """Return a `text_completion` object holding the answer, finish and usage recorded."""
        usage = recorded_usage(result)
        return {
            "object": "text_completion",
            "choices": [
                {
                    "index": 0,
                    "text": result.response,
                    "finish_reason": result.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }


def extra_fields(raw: str | None, columns: tuple[str, ...]) -> dict[str, Any]:
    """Return the extra columns' values read from a completions answer's raw body.

    Each is None when the body is absent (the row failed or is pending) or does not hold it.
    """
    values: dict[str, Any] = dict.fromkeys(columns)
    if not raw:
        return values
    try:
        choices = jsoncodec.loads(raw.encode("utf-8", "surrogatepass")).get("choices")
    except (ValueError, AttributeError):
        return values
    if not isinstance(choices, list):
        return values
    objects = [c for c in choices if isinstance(c, dict)]
    if "logprobs" in values and objects:
        values["logprobs"] = next(
            (c.get("logprobs") for c in objects if (_int(c.get("index")) or 0) == 0), None
        )
    if "choices" in values:
        ordered = sorted(objects, key=lambda c: _int(c.get("index")) or 0)
        values["choices"] = [c.get("text") for c in ordered]
    return values


def _refuse_system(settings: RequestSettings) -> None:
    if settings.system:
        raise ConfigError(
            "completions take no system prompt: put its text in the --template instead"
        )


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return bool(prompt.strip())
    if isinstance(prompt, list) and prompt:
        return all(isinstance(p, (str, int, list)) for p in prompt)
    return False


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) else None
