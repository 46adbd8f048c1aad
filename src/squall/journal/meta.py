"""`RunMeta`: what a run records about itself beside the rows, typed.

It is kept in the meta table under the keys squall has always used, as JSON text, so a
journal written before `RunMeta` existed reads the same:

- "models": {endpoint name: model}, for tokens by model and prices;
- "prices": {model: {"input": USD per M tokens, "output": USD per M tokens}};
- "last_stop_reason": why the last run stopped early ("" or missing: it did not).

`put_meta` writes the meta table, for `RunMeta` and the journal's own keys alike.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JournalError
from .schema import journal_error

META_KEYS = ("models", "prices", "last_stop_reason")
"""The meta keys `RunMeta` reads and writes."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens for one model (as `squall.config.Price` holds it)."""

    input: float = 0.0
    output: float = 0.0
    batch: float = 0.5
    """The share the provider's Batch API charges."""

    def as_dict(self) -> dict[str, float]:
        """Return the price as `squall.config.Price(**...)` takes it."""
        return {"input": self.input, "output": self.output, "batch": self.batch}


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What a run records about itself: its endpoints' models, prices, and how it stopped."""

    models: Mapping[str, str] = field(default_factory=dict)
    """Model by endpoint name."""
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    """Price by model."""
    last_stop_reason: str | None = None
    """Why the last run stopped before its end (a cost cap...); None if it did not."""

    def to_meta(self) -> dict[str, str]:
        """Return the meta table's values for this record, by key."""
        return {
            "models": json.dumps(dict(self.models), sort_keys=True),
            "prices": json.dumps({k: v.as_dict() for k, v in self.prices.items()}, sort_keys=True),
            "last_stop_reason": self.last_stop_reason or "",
        }

    @classmethod
    def from_meta(cls, get: Callable[[str], str | None]) -> RunMeta:
        """Build the record from meta values (`get(key)`: the value, or None if unset).

        Raises:
            JournalError: a value is not what squall writes there.
        """
        models = _object(get, "models")
        prices = _object(get, "prices")
        try:
            return cls(
                models={str(k): str(v) for k, v in models.items()},
                prices={str(k): _price(v) for k, v in prices.items()},
                last_stop_reason=get("last_stop_reason") or None,
            )
        except (TypeError, ValueError) as exc:
            raise JournalError(f"the journal's run meta is malformed ({exc})") from exc


def put_meta(conn: sqlite3.Connection, path: Path, items: Mapping[str, str]) -> None:
    """Store `items` in the meta table, replacing any values of their keys, in one transaction.

    Raises:
        JournalError: the file cannot be written (nothing is stored).
    """
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", items.items())
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise journal_error(exc, path, "write meta") from exc


def _object(get: Callable[[str], str | None], key: str) -> dict[str, Any]:
    text = get(key)
    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise JournalError(f"the journal's meta {key!r} is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise JournalError(f"the journal's meta {key!r} is not a JSON object")
    return value


def _price(value: Any) -> ModelPrice:
    if not isinstance(value, Mapping):
        raise TypeError(f"a price must be an object, not {value!r}")
    return ModelPrice(
        input=float(value.get("input", 0.0)),
        output=float(value.get("output", 0.0)),
        batch=float(value.get("batch", 0.5)),
    )
