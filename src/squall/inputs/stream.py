"""A stream (standard input, a pipe, a binary file object): JSON Lines read once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from .. import formats
from ..errors import InputError
from ..records import Row
from .base import InputSource
from .jsonl import jsonl_rows


def open_stream(stream: IO[bytes], *, fmt: str | None, name: str) -> StreamInput:
    """Return a StreamInput over `stream`.

    Raises:
        InputError: `fmt` names a format other than JSON Lines.
    """
    if fmt is not None and formats.format_named(fmt) != "jsonl":
        raise InputError(
            f"a stream is read as JSON Lines, not {fmt!r}: save it to a file with the right "
            "extension to read another format",
            file=name,
        )
    return StreamInput(stream, name=name)


class StreamInput(InputSource):
    """Rows of JSON Lines read once from a stream (standard input, a pipe, a file object).

    `first_row()`, `columns()` and `is_batch` peek: the first row is kept and handed out
    again by `rows()`, which may be called only once. The stream is not closed.
    """

    def __init__(self, stream: IO[bytes], *, name: str) -> None:
        super().__init__(name)
        self._reader = jsonl_rows(stream, name)
        self._started = False  # rows() was called
        self._consumed = False  # the stream is being read past a peek
        self._peeked = False

    def rows(self) -> Iterator[Row]:
        """Return the rows, the first (if peeked) included; see `InputSource.rows`.

        Raises:
            InputError: called a second time: a stream can be read only once.
        """
        if self._started:
            raise InputError(
                "is a stream and was already read: it can be read only once; save it to a "
                "file to read it again",
                file=self.name,
            )
        self._started = True
        return super().rows()

    def first_row(self) -> Row:
        """Return the first row, read from the stream once and kept for `rows()`.

        Raises:
            InputError: the stream has no rows, or the first cannot be read.
        """
        if self._first is None:
            if self._consumed:  # rows() read the stream to its end and found no row
                raise self._empty_error()
            self._peeked = True
            self._first = next(self._reader, None)
            if self._first is None:
                raise self._empty_error()
        return self._first

    def _read(self) -> Iterator[Row]:
        self._consumed = True
        if self._peeked:
            if self._first is None:
                return
            yield self._first
        else:
            for row in self._reader:  # kept, so first_row() still answers once rows() began
                self._first = row
                yield row
                break
        yield from self._reader
