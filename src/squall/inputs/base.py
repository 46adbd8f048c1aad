"""InputSource: rows from one input, readable from the start as often as needed."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import openai_batch
from ..errors import InputError
from ..records import Row

BATCH_SIZE = 1024
"""Rows converted at a time from a Parquet file or a DataFrame."""


class InputSource(ABC):
    """Rows from one input, readable from the start as often as needed (a stream: once).

    Attributes:
        name: the file path, or "<list>"/"<DataFrame>"/"<iterable>", for messages.
        path: the file read, or None for in-memory data (`name` may be overridden).
    """

    name: str
    path: Path | None

    def __init__(self, name: str, path: Path | None = None) -> None:
        self.name = name
        self.path = path
        self._first: Row | None = None

    def rows(self) -> Iterator[Row]:
        """Yield every row from the start, checking OpenAI batch lines when `is_batch`.

        Raises:
            InputError: a row cannot be read, a batch input has a line that is not a batch
                request, or the input has no rows at all.
        """
        batch = self.is_batch
        count = 0
        for row in self._read():
            if batch:
                openai_batch.check_line(row, self.name)
            count += 1
            yield row
        if count == 0:
            raise self._empty_error()

    def first_row(self) -> Row:
        """Return the first row, read once and remembered.

        Raises:
            InputError: the input has no rows, or the first cannot be read.
        """
        if self._first is None:
            reader = self._read()
            try:
                self._first = next(reader, None)
            finally:
                close = getattr(reader, "close", None)
                if close is not None:
                    close()
            if self._first is None:
                raise self._empty_error()
        return self._first

    @property
    def is_batch(self) -> bool:
        """Return True when the rows are OpenAI batch lines (judged by the first row)."""
        return is_batch_line(self.first_row().data)

    def columns(self) -> list[str]:
        """Return the first row's field names, for checking a template before sending."""
        return list(self.first_row().data)

    def count(self) -> int | None:
        """Return the number of rows when known without reading them all, else None."""
        return None

    @abstractmethod
    def _read(self) -> Iterator[Row]:
        """Yield the rows from the start; no batch or emptiness checks."""

    def _empty_error(self) -> InputError:
        return InputError("has no rows: nothing to send", file=self.name)


def is_batch_line(data: Mapping[str, Any]) -> bool:
    """Return True when `data` looks like an OpenAI batch request line."""
    return openai_batch.is_batch_line(data)
