"""Embeddings (`/embeddings`): rows packed many to a request, each answered by its vector.

A row's text comes from, in this order: its own body's `input` when the input is OpenAI batch
lines; the template when one is given; the row's `input` field; its `prompt` field. The
request for one row is `{"input": text, **extras}` (`build`), as for any operation; the
engine then packs many rows' requests into one (the building blocks, all pure, are here):

    pack(specs)            groups requests by count and estimated tokens (and same settings)
    pack_body(bodies)      the one body sent for a pack: `input` a list, the settings once
    parse_pack(raw, ests)  one EmbeddedRow per input, matched by each item's `index`
    split(pack)            the halves to retry when a pack is refused as a bad request
    apportion(total, ests) the answer's `usage.prompt_tokens` shared out to its rows

`dimensions` and `encoding_format` ("float" or "base64") pass through `params`. A base64
vector is little-endian float32, decoded here; either way a row's vector is journaled as JSON
text in the row's response (`EmbeddedRow.as_completion()`), and the output column
`embedding` holds it as a list.
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .. import jsoncodec
from ..errors import ConfigError, InputError, MalformedResponse
from ..records import Completion, Row, RowResult
from ..tokens import estimate_prompt_tokens
from .chat import list_columns

if TYPE_CHECKING:
    from . import RequestSettings

MAX_INPUTS = 2048
"""The most inputs the API takes in one request."""

DEFAULT_PACK_INPUTS = 512
"""Rows packed into one request by default: large enough to save requests, small enough that
a pack that must be retried or split costs little."""

DEFAULT_PACK_TOKENS = 100_000
"""Estimated tokens packed into one request by default: a third of OpenAI's 300,000 a request,
so an estimate off by 2x (code, digits) still fits."""

ENCODING_FORMATS = ("float", "base64")
"""The `encoding_format`s squall reads."""

_NOT_PARAMS: Mapping[str, str] = {
    "max_tokens": "embeddings generate no tokens",
    "temperature": "embeddings do not sample",
}


@dataclass(slots=True)
class EmbeddedRow:
    """One input's answer from an embeddings request.

    Attributes:
        vector: the embedding.
        prompt_tokens: its share of the answer's `usage.prompt_tokens` (None without usage).
    """

    vector: list[float]
    prompt_tokens: int | None

    def text(self) -> str:
        """Return the vector as JSON text, as the journal keeps it in the row's response."""
        return jsoncodec.dumps_body(self.vector).decode()

    def as_completion(self) -> Completion:
        """Return the Completion the journal records for this row (`record_success`)."""
        return Completion(
            text=self.text(),
            finish_reason=None,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=None,
        )


class Estimated(Protocol):
    """Anything packed: a request with its estimated tokens (squall.records.RequestSpec)."""

    @property
    def est_prompt_tokens(self) -> int:
        """The offline estimate of its tokens."""
        ...


T = TypeVar("T", bound=Estimated)
S = TypeVar("S")


class EmbeddingsOperation:
    """The embeddings request kind (see the module docstring).

    Args:
        max_inputs: the most rows packed into one request (1 to MAX_INPUTS).
        max_tokens: the most estimated tokens packed into one request (a row estimated
            over it is sent alone).
    """

    name = "embeddings"
    path = "/embeddings"
    batch_url = "/v1/embeddings"
    reserved_params: Mapping[str, str] = {
        "input": "the inputs come from the rows (or --template)",
    }
    output_columns: tuple[str, ...] = (
        "embedding",
        "error",
        "prompt_tokens",
        "latency_s",
        "attempts",
        "endpoint",
    )
    output_types: Mapping[str, str] = {
        "error": "string",
        "embedding": "list<float32>",
        "prompt_tokens": "int64",
        "latency_s": "float64",
        "attempts": "int64",
        "endpoint": "string",
    }

    def __init__(
        self, max_inputs: int = DEFAULT_PACK_INPUTS, max_tokens: int = DEFAULT_PACK_TOKENS
    ) -> None:
        if not 1 <= max_inputs <= MAX_INPUTS:
            raise ConfigError(f"max_inputs must be 1 to {MAX_INPUTS}, not {max_inputs}")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, not {max_tokens}")
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"EmbeddingsOperation(max_inputs={self.max_inputs}, max_tokens={self.max_tokens})"

    def build(self, row: Row, text: str | None, settings: RequestSettings) -> dict[str, Any]:
        """Return the body for `row` alone: its text as `input`, then the run's extras.

        Raises:
            InputError: the row has no usable text (the message names file, line, field).
            ConfigError: the run gives a system prompt, max_tokens or temperature, or an
                `encoding_format` or `dimensions` squall cannot use.
        """
        check_settings(settings)
        if text is None:
            field = "input" if "input" in row.data else "prompt"
            if field not in row.data:
                raise InputError(
                    f"has no text to embed: give each row an 'input' or 'prompt' field, or "
                    f"pass --template to build one from the columns ({list_columns(row.data)})",
                    file=settings.source_name,
                    line=row.line,
                )
            text = _row_text(row, field, settings.source_name)
        return {"input": text, **settings.extras}

    def build_batch(
        self, row: Row, body: dict[str, Any], settings: RequestSettings
    ) -> dict[str, Any]:
        """Return the batch line's body after checking its input is one text.

        Raises:
            InputError: the body's input is missing, empty or not one text.
            ConfigError: as for `build`.
        """
        check_settings(settings)
        value = body.get("input")
        if not isinstance(value, str) or not value.strip():
            what = "no input" if value is None else f"an input that is a {type(value).__name__}"
            if isinstance(value, str):
                what = "an empty input"
            raise InputError(
                f"body has {what}: give one text per line as input (squall packs lines into "
                "requests itself)",
                file=settings.source_name,
                line=row.line,
                field="body.input",
            )
        _check_format(body)
        return body

    def estimate_tokens(self, body: Mapping[str, Any]) -> int:
        """Return the estimated tokens of the body's input (one text or a pack's list)."""
        return estimate_prompt_tokens(body["input"])

    def parse(self, raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> Completion:
        """Return the Completion of an answer to a one-input request (see `parse_pack`).

        Raises:
            MalformedResponse: the body is not an embeddings answer for one input.
        """
        done = parse_pack(raw, [1], redact)[0].as_completion()
        if keep_raw:
            done.raw = raw.decode("utf-8", "replace")
        return done

    def pack(
        self, specs: Iterable[T], key: Callable[[T], object] | None = None
    ) -> Iterator[list[T]]:
        """Return `pack(specs, ...)` under this operation's limits."""
        return pack(specs, max_inputs=self.max_inputs, max_tokens=self.max_tokens, key=key)

    def pack_body(self, bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Return `pack_body(bodies)`."""
        return pack_body(bodies)

    def parse_pack(
        self,
        raw: bytes,
        estimates: Sequence[int],
        redact: Callable[[str], str],
        *,
        dimensions: int | None = None,
    ) -> list[EmbeddedRow]:
        """Return `parse_pack(raw, estimates, redact, dimensions=dimensions)`."""
        return parse_pack(raw, estimates, redact, dimensions=dimensions)

    def output_fields(self, result: RowResult) -> dict[str, Any]:
        """Return the output columns: the vector (a list), then squall's bookkeeping."""
        response = result.response
        return {
            "embedding": None if response is None else jsoncodec.loads(response.encode()),
            "error": result.error.as_dict() if result.error else None,
            "prompt_tokens": result.prompt_tokens,
            "latency_s": None if result.latency_s is None else round(result.latency_s, 4),
            "attempts": result.attempts,
            "endpoint": result.endpoint,
        }

    def rebuild_body(self, result: RowResult) -> dict[str, Any]:
        """Return an embeddings `list` object holding the row's vector and usage."""
        vector = None if result.response is None else jsoncodec.loads(result.response.encode())
        tokens = result.prompt_tokens
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "usage": None if tokens is None else {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def check_settings(settings: RequestSettings) -> None:
    """Check the run's settings suit embeddings.

    Raises:
        ConfigError: a system prompt, max_tokens or temperature is given, or `params` sets an
            `encoding_format` other than float or base64, or `dimensions` not a positive int.
    """
    if settings.system:
        raise ConfigError("embeddings take no system prompt: put its text in the --template")
    for name, why in _NOT_PARAMS.items():
        if name in settings.extras:
            raise ConfigError(f"embeddings take no {name}: {why}")
    _check_format(settings.extras)


def _check_format(body: Mapping[str, Any]) -> None:
    fmt = body.get("encoding_format", "float")
    if fmt not in ENCODING_FORMATS:
        raise ConfigError(f"encoding_format is {fmt!r}: use one of {', '.join(ENCODING_FORMATS)}")
    dims = body.get("dimensions")
    if dims is not None and (type(dims) is not int or dims < 1):
        raise ConfigError(f"dimensions is {dims!r}: give a positive whole number")


def _row_text(row: Row, field: str, source_name: str) -> str:
    value = row.data[field]
    if not isinstance(value, str):
        what = "null" if value is None else f"a {type(value).__name__}"
        raise InputError(
            f"{field} is {what}, not text: give text, or use --template '{{{field}}}' to format it",
            file=source_name,
            line=row.line,
            field=field,
        )
    if not value.strip():
        raise InputError(
            f"{field} is empty: give the row some text, or remove it",
            file=source_name,
            line=row.line,
            field=field,
        )
    return value


# --- packing -------------------------------------------------------------------------------


def pack(
    specs: Iterable[T],
    *,
    max_inputs: int = DEFAULT_PACK_INPUTS,
    max_tokens: int = DEFAULT_PACK_TOKENS,
    key: Callable[[T], object] | None = None,
) -> Iterator[list[T]]:
    """Yield `specs` in order, grouped into packs to send one request each.

    A pack closes when it holds `max_inputs`, when the next one would take its estimated
    tokens past `max_tokens` (one estimated over it goes alone), or when the next one's `key`
    differs (compared with ==; e.g. `spec_key`, so batch lines with different models or
    settings never share a request). Lazy: a pack is yielded as soon as it is closed.
    """
    current: list[T] = []
    tokens = 0
    current_key: object = None
    for spec in specs:
        cost = spec.est_prompt_tokens
        k = key(spec) if key is not None else None
        if current and (
            len(current) >= max_inputs or tokens + cost > max_tokens or k != current_key
        ):
            yield current
            current, tokens = [], 0
        if not current:
            current_key = k
        current.append(spec)
        tokens += cost
    if current:
        yield current


def spec_key(spec: Any) -> tuple[Any, dict[str, Any]]:
    """Return what must match for two requests to share a pack: the model and the settings.

    `spec` is a squall.records.RequestSpec (its `model` and its `body` less `input`).
    """
    return spec.model, {k: v for k, v in spec.body.items() if k != "input"}


def pack_body(bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the one body (without `model`) for a pack of one-row bodies, in their order.

    `input` is the list of the rows' inputs; every other field is taken from the first body
    (a pack made with `spec_key` holds bodies that agree on them).

    Raises:
        ValueError: `bodies` is empty.
    """
    if not bodies:
        raise ValueError("a pack holds at least one request")
    return {**bodies[0], "input": [b["input"] for b in bodies]}


def split(specs: Sequence[S]) -> tuple[list[S], list[S]]:
    """Return the two halves of a pack refused as a bad request, to send each on its own.

    Halving until the bad row is alone costs about 2 * log2(len) extra requests; a pack of
    one is final (the row fails).

    Raises:
        ValueError: the pack holds only one request.
    """
    if len(specs) < 2:
        raise ValueError("a pack of one cannot be split: its row is the bad one")
    half = (len(specs) + 1) // 2
    return list(specs[:half]), list(specs[half:])


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Return `total` shared out in proportion to `weights`: integers that sum to `total`.

    Largest remainders get the units left over (earlier rows first on ties); weights at or
    below zero get nothing unless all are, when the total is shared equally.
    """
    n = len(weights)
    if n == 0:
        return []
    clipped = [w if w > 0 else 0 for w in weights]
    whole = sum(clipped)
    if whole == 0:
        clipped, whole = [1] * n, n
    shares = [total * w // whole for w in clipped]
    left = total - sum(shares)
    if left:
        order = sorted(range(n), key=lambda i: (-(total * clipped[i] % whole), i))
        for i in order[:left]:
            shares[i] += 1
    return shares


# --- answers -------------------------------------------------------------------------------


def parse_pack(
    raw: bytes,
    estimates: Sequence[int],
    redact: Callable[[str], str],
    *,
    dimensions: int | None = None,
) -> list[EmbeddedRow]:
    """Return one EmbeddedRow per input sent, in the order sent, from an embeddings answer.

    Each item of `data` is matched to its input by its `index`, never by its place in the list
    (the spec allows any order). A vector is a list of floats, or base64 (little-endian
    float32). `usage.prompt_tokens` is shared out by `apportion(total, estimates)`.

    Args:
        raw: the answer's body.
        estimates: each input's estimated tokens, in the order sent (its length is the pack's).
        redact: masks secrets in an error's snippet of the body.
        dimensions: the vectors' length asked for, checked when given.

    Raises:
        MalformedResponse: the body is not an embeddings list, an item or its vector is not
            readable, or the indexes do not cover the inputs exactly once each.
    """
    n = len(estimates)
    try:
        data = jsoncodec.loads(raw)
        items = data["data"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:120].decode("utf-8", "replace")
        raise MalformedResponse(
            redact(f"the body is not an embeddings list: {snippet!r}"), status=200
        ) from None
    if not isinstance(items, list):
        raise MalformedResponse("the body's data is not a list", status=200)
    vectors = _match(items, n)
    if dimensions is not None:
        wrong = next((i for i, v in enumerate(vectors) if len(v) != dimensions), None)
        if wrong is not None:
            raise MalformedResponse(
                f"the vector at index {wrong} has {len(vectors[wrong])} dimensions, "
                f"not the {dimensions} asked for",
                status=200,
            )
    usage = data.get("usage")
    total = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if type(total) is int:
        shares: list[int | None] = list(apportion(total, estimates))
    else:
        shares = [None] * n
    return [EmbeddedRow(v, s) for v, s in zip(vectors, shares, strict=True)]


def _match(items: list[Any], n: int) -> list[list[float]]:
    found: list[list[float] | None] = [None] * n
    duplicated: list[int] = []
    unexpected: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise MalformedResponse("an item of the body's data is not an object", status=200)
        index = item.get("index")
        if type(index) is not int or not 0 <= index < n:
            unexpected.append(index)
            continue
        if found[index] is not None:
            duplicated.append(index)
            continue
        found[index] = _vector(item.get("embedding"), index)
    missing = [i for i, v in enumerate(found) if v is None]
    if missing or duplicated or unexpected:
        parts = [
            f"{what} {_few(values)}"
            for what, values in (
                ("missing index", missing),
                ("index given twice", duplicated),
                ("unexpected index", unexpected),
            )
            if values
        ]
        raise MalformedResponse(
            f"the embeddings answer does not match the {n} inputs sent: {'; '.join(parts)}",
            status=200,
        )
    return [v for v in found if v is not None]


def _few(values: list[Any]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    return shown + (f" ... ({len(values)} in all)" if len(values) > 5 else "")


def _vector(value: Any, index: int) -> list[float]:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            return decode_base64(value)
        except ValueError as exc:
            raise MalformedResponse(
                f"the vector at index {index} is not base64 float32: {exc}", status=200
            ) from None
    raise MalformedResponse(
        f"the vector at index {index} is a {type(value).__name__}, not a list or base64",
        status=200,
    )


def decode_base64(text: str) -> list[float]:
    """Return the floats of a base64 vector (little-endian float32, as OpenAI sends).

    Raises:
        ValueError: the text is not base64, or its length is not a multiple of 4 bytes.
    """
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from None
    if len(data) % 4:
        raise ValueError(f"{len(data)} bytes is not a whole number of float32s")
    values = array("f", data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def encode_base64(vector: Iterable[float]) -> str:
    """Return `vector` as base64 little-endian float32 (the inverse of `decode_base64`)."""
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")
