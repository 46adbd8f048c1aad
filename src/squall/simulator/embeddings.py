"""The embeddings request kind: `POST /v1/embeddings`, parsed and answered.

`input` is one text or a list of up to 2048; each gets `expected_embedding(text, dimensions)`
(`dimensions` defaults to `DEFAULT_DIMENSIONS`), as JSON floats or, with
`encoding_format = "base64"`, little-endian float32 in base64. The `data` list is shuffled
(seeded by the answer's number), as the API does not promise its order: a client must match
items by `index`. A request counts once against the key's request limit however many inputs
it carries, and all of their tokens count against its token limit; the ledger's `inputs`
says how many it carried.
"""

from __future__ import annotations

import base64
import random
import sys
from array import array
from typing import Any

from .answers import expected_embedding, prompt_digest, prompt_tokens, read_payload, text_list

PATH = "/v1/embeddings"

MAX_INPUTS = 2048
"""The most inputs one request may carry (as OpenAI's API)."""

DEFAULT_DIMENSIONS = 64
"""The vectors' length when the request gives no `dimensions` (small: tests read them)."""

MAX_DIMENSIONS = 4096


class EmbeddingRequest:
    """One embeddings request, parsed leniently (see `chat.ChatRequest` for the attributes).

    Attributes:
        inputs: how many texts it carried.
        texts: the texts, in the order sent.
    """

    __slots__ = ("base64", "cost", "digest", "dimensions", "inputs", "model", "problem", "texts")

    def __init__(self, body: dict[str, Any], *, readable: bool) -> None:
        model = body.get("model")
        self.model = model if isinstance(model, str) else ""
        texts = text_list(body.get("input"))
        ok = texts is not None
        self.texts: list[str] = texts if texts is not None else []
        self.inputs = len(self.texts)
        self.digest = prompt_digest("\n".join(self.texts)) if ok else ""
        dims = body.get("dimensions", DEFAULT_DIMENSIONS)
        self.dimensions = dims if type(dims) is int else DEFAULT_DIMENSIONS
        fmt = body.get("encoding_format", "float")
        self.base64 = fmt == "base64"
        self.problem = ""
        if not readable:
            self.problem = "We could not parse the JSON body of your request."
        elif not self.model:
            self.problem = "you must provide a model parameter"
        elif not ok:
            self.problem = (
                "'input' must be a non-empty string or a list of strings "
                "(this simulator takes text)"
            )
        elif len(self.texts) > MAX_INPUTS:
            self.problem = f"'input' may hold at most {MAX_INPUTS} items, not {len(self.texts)}"
        elif not all(t for t in self.texts):
            self.problem = "'input' cannot hold an empty string"
        elif type(dims) is not int or not 1 <= dims <= MAX_DIMENSIONS:
            self.problem = f"dimensions must be an integer from 1 to {MAX_DIMENSIONS}"
        elif fmt not in ("float", "base64"):
            self.problem = "encoding_format must be 'float' or 'base64'"
        self.cost = 0 if self.problem else prompt_tokens(self.texts)

    @classmethod
    def parse(cls, raw: bytes) -> EmbeddingRequest:
        """Return the request a body holds (an unreadable body gives one with a `problem`)."""
        payload, readable = read_payload(raw)
        return cls(payload, readable=readable)

    def contains(self, marker: str) -> bool:
        """Return whether any input holds `marker` (the SQUALL_* triggers)."""
        return any(marker in t for t in self.texts)

    def answer_body(self, number: int) -> dict[str, Any]:
        """Return the embeddings list answering this request, its data shuffled."""
        data = [
            {"object": "embedding", "index": i, "embedding": self._vector(text)}
            for i, text in enumerate(self.texts)
        ]
        random.Random(number).shuffle(data)
        tokens = prompt_tokens(self.texts)
        return {
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _vector(self, text: str) -> list[float] | str:
        vector = expected_embedding(text, self.dimensions)
        if not self.base64:
            return vector
        values = array("f", vector)
        if sys.byteorder == "big":
            values.byteswap()
        return base64.b64encode(values.tobytes()).decode("ascii")
