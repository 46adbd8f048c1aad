"""Which URL path is answered by which request kind: the table to extend for a new endpoint.

Every POST path in `REQUEST_KINDS` goes through the same steps in `provider.py` (key, body,
model, limits, content triggers, faults, latency, answer); the kind only says how its body is
read and what a successful answer holds. The kinds served:

    POST /v1/chat/completions   chat.py: `messages` in, `chat.completion` out
    POST /v1/completions        completions.py: `prompt` in, `text_completion` out
    POST /v1/embeddings         embeddings.py: `input` (one text or many) in, vectors out

To serve another kind, write one module like `chat.py` (a class whose `parse(raw)` returns
an `AnsweredRequest`) and add one entry here; a batch may then name it as its endpoint.

/v1/files and /v1/batches (files.py, batches.py) are not request kinds: they keep state
between requests and are never limited, so the provider hands them to their stores after
checking the key. Nor are GET /v1/models and GET /_squall/ledger (no limits, no faults): the
provider answers them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import chat, completions, embeddings


class AnsweredRequest(Protocol):
    """What the provider needs from one parsed request of any kind."""

    @property
    def model(self) -> str:
        """The model asked for ("" when the body was unreadable)."""
        ...

    @property
    def digest(self) -> str:
        """sha256 hex of the prompt, as the ledger stores it ("" when there was none)."""
        ...

    @property
    def inputs(self) -> int:
        """How many prompts or inputs it carried (an embeddings pack carries many)."""
        ...

    @property
    def problem(self) -> str:
        """Why the body is refused with 400 ("" when it is fine)."""
        ...

    @property
    def cost(self) -> int:
        """Tokens charged up front against the key's tokens-per-minute limit."""
        ...

    def contains(self, marker: str) -> bool:
        """Return whether the prompt holds `marker` (the SQUALL_* triggers)."""
        ...

    def answer_body(self, number: int) -> dict[str, Any]:
        """Return the JSON object a successful answer holds, the `number`-th answer served."""
        ...


RequestKind = Callable[[bytes], AnsweredRequest]
"""Parses a request body into the request of one kind (never raises on a bad body)."""

REQUEST_KINDS: Mapping[str, RequestKind] = {
    chat.PATH: chat.ChatRequest.parse,
    completions.PATH: completions.CompletionRequest.parse,
    embeddings.PATH: embeddings.EmbeddingRequest.parse,
}
"""The POST paths answered, and how each one's body is read."""
