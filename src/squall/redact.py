"""Keep API keys out of every string squall shows or stores.

`ApiKey` holds a secret whose `str`, `repr` and format all show `sk-...abcd`; only
`ApiKey.reveal()` gives the value, and only transport calls it, to build the header.
"""

from __future__ import annotations

import re
from typing import Any


def mask_key(key: str) -> str:
    """Return `key` masked as `sk-...abcd`: the prefix up to the first dash and the last 4."""
    if not key:
        return "<empty>"
    tail = key[-4:] if len(key) > 8 else ""
    prefix = key.split("-", 1)[0] + "-" if "-" in key[:8] else ""
    return f"{prefix}...{tail}" if tail else f"{prefix}..."


class ApiKey:
    """A secret API key that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the real key: only for the Authorization header."""
        return self._value

    @property
    def masked(self) -> str:
        """The key as it may be shown: `sk-...abcd`."""
        return mask_key(self._value)

    def __repr__(self) -> str:
        return f"ApiKey({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (Ray workers, subprocesses) must carry the key; it still never prints.
        return (ApiKey, (self._value,))


class Redactor:
    """Replace every known key inside free text (server error bodies may echo the key)."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = sorted({k for k in keys if len(k) >= 6}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(k) for k in self._keys)) if self._keys else None
        )

    def __call__(self, text: str) -> str:
        """Return `text` with each key replaced by its masked form."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: mask_key(m.group(0)), text)
