"""The kinds of request squall sends, one module each, and the registry that names them.

An operation owns everything that depends on the request kind: the URL path it is posted to,
the body built from a row, how a 200 answer is read, the offline token estimate, the columns
written back, and the body of an OpenAI batch output line. Transport, prompts, outputs and the
batch format ask the operation instead of assuming one. A new kind is one new module here,
added to `_REGISTRY`.

    chat         /chat/completions (operations/chat.py)
    completions  /completions (operations/completions.py)
    embeddings   /embeddings (operations/embeddings.py): many rows packed to a request

Most kinds send one row a request. A kind that packs rows is also a `PackedOperation`
(`packing(op)` says which): the engine groups the rows' requests with `pack`, sends one
`pack_body` per group, and shares out its answer with `parse_pack` (see embeddings.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..records import Completion, Row, RowResult
from .chat import ChatOperation
from .completions import CompletionsOperation
from .embeddings import EmbeddedRow, EmbeddingsOperation


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """The run's settings an operation builds bodies with (checked once, by RequestBuilder).

    Attributes:
        system: the system prompt, or None.
        extras: the body fields every request carries (params, max_tokens, temperature).
        source_name: the input's name, for error messages.
        system_message: `system` as a chat message, made once rather than per row.
    """

    system: str | None
    extras: Mapping[str, Any]
    source_name: str
    system_message: dict[str, Any] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.system:
            object.__setattr__(self, "system_message", {"role": "system", "content": self.system})


class Operation(Protocol):
    """One kind of request: where it goes, its body, its answer and its output columns.

    Attributes:
        name: the registry's name for it ("chat").
        path: its URL path relative to an endpoint's base_url ("/chat/completions").
        batch_url: the `url` OpenAI batch lines give for it ("/v1/chat/completions").
        reserved_params: body fields the operation fills itself, each with why `params`
            may not set it.
        output_columns: the columns written beside each input row, in order.
        output_types: Parquet's type ("string", "int64", "float64", "list<float32>") for each
            output column.
    """

    name: str
    path: str
    batch_url: str
    reserved_params: Mapping[str, str]
    output_columns: tuple[str, ...]
    output_types: Mapping[str, str]

    def build(self, row: Row, text: str | None, settings: RequestSettings) -> dict[str, Any]:
        """Return the request body (without `model`) for `row`.

        `text` is the template rendered for the row, or None when there is no template.

        Raises:
            InputError: the row has nothing usable to send.
        """
        ...

    def build_batch(
        self, row: Row, body: dict[str, Any], settings: RequestSettings
    ) -> dict[str, Any]:
        """Return a batch line's `body` (a fresh dict, `model` removed) checked and completed.

        Raises:
            InputError: the body is not a request of this kind.
        """
        ...

    def estimate_tokens(self, body: Mapping[str, Any]) -> int:
        """Return the offline estimate of the prompt tokens `body` costs."""
        ...

    def parse(self, raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> Completion:
        """Return the Completion a 200 answer's body holds.

        Raises:
            MalformedResponse: the body is not an answer of this kind.
            ContentFiltered: the provider filtered the answer away.
        """
        ...

    def output_fields(self, result: RowResult) -> dict[str, Any]:
        """Return the output columns' values for `result`, in `output_columns` order."""
        ...

    def rebuild_body(self, result: RowResult) -> dict[str, Any]:
        """Return a batch output line's `response.body` rebuilt from what the journal kept."""
        ...


@runtime_checkable
class PackedOperation(Operation, Protocol):
    """An operation whose requests carry many rows each (embeddings).

    `build` still makes one row's body, and `parse` reads the answer to a one-row request;
    the engine sends packs instead:

        for group in op.pack(specs, key=embeddings.spec_key):  # count, tokens, settings
            body = op.pack_body([s.body for s in group])  # then add `model`
            rows = op.parse_pack(raw, [s.est_prompt_tokens for s in group], redact,
                                 dimensions=body.get("dimensions"))
            # rows[i] answers group[i]: journal rows[i].as_completion() for it

    A pack refused as a bad request (400) is split in halves (`embeddings.split`) and each
    half sent again, until the bad row is alone and fails by itself.

    Attributes:
        max_inputs: the most rows in one request.
        max_tokens: the most estimated tokens in one request.
    """

    max_inputs: int
    max_tokens: int

    def pack(
        self, specs: Iterable[Any], key: Callable[[Any], object] | None = None
    ) -> Iterator[list[Any]]:
        """Yield `specs` grouped into packs, in order (see `embeddings.pack`)."""
        ...

    def pack_body(self, bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Return the one body (without `model`) that carries `bodies`' inputs."""
        ...

    def parse_pack(
        self,
        raw: bytes,
        estimates: Sequence[int],
        redact: Callable[[str], str],
        *,
        dimensions: int | None = None,
    ) -> list[EmbeddedRow]:
        """Return each input's answer, in the order sent, matched by the answer's indexes.

        `estimates` are the rows' estimated tokens (the answer's usage is shared by them);
        `dimensions`, when given, is the vectors' length to check.

        Raises:
            MalformedResponse: the body does not answer exactly the inputs sent.
        """
        ...


CHAT: Operation = ChatOperation()
"""The chat-completion operation, the default."""

COMPLETIONS: CompletionsOperation = CompletionsOperation()
"""The legacy completions operation (no extra output columns: see `with_params`)."""

EMBEDDINGS: PackedOperation = EmbeddingsOperation()
"""The embeddings operation, with the default packing limits."""

_REGISTRY: dict[str, Operation] = {op.name: op for op in (CHAT, COMPLETIONS, EMBEDDINGS)}


def operation(name: str) -> Operation:
    """Return the operation called `name` ("chat", "completions", "embeddings").

    Raises:
        ConfigError: no operation has that name; the message lists those that exist.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown operation {name!r}: use one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def operations() -> tuple[Operation, ...]:
    """Return every registered operation, in registration order."""
    return tuple(_REGISTRY.values())


def packing(op: Operation) -> PackedOperation | None:
    """Return `op` as a PackedOperation when its requests carry many rows, else None."""
    return op if isinstance(op, PackedOperation) else None


def for_batch_url(url: object) -> Operation | None:
    """Return the operation whose OpenAI batch `url` is `url`, or None."""
    for op in _REGISTRY.values():
        if op.batch_url == url:
            return op
    return None


def batch_urls() -> tuple[str, ...]:
    """Return the OpenAI batch `url`s squall sends, one per operation."""
    return tuple(op.batch_url for op in _REGISTRY.values())


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "EmbeddedRow",
    "Operation",
    "PackedOperation",
    "RequestSettings",
    "batch_urls",
    "for_batch_url",
    "operation",
    "operations",
    "packing",
]
