"""Input rows from files, DataFrames, lists and iterables, streamed in constant memory.

Every source but a stream can be read again from the start: files are reopened for each
pass; a one-shot iterator is spooled to a temporary file the first time through so that
later passes replay it without holding it in memory. A stream (standard input as `"-"`, a
pipe, a binary file object) is JSON Lines read once: its first row is peeked and kept, and
a second `rows()` is refused (`StreamInput`).

Formats, by extension (`fmt` overrides; a `.gz` suffix is read through gzip), from the table
in squall.formats: `.jsonl`/`.ndjson`/`.json` (JSON Lines), `.csv`, `.tsv`, `.parquet`
(needs pyarrow).

One module per kind of source: `base` (InputSource), `files` (format and bytes of a file),
`jsonl`, `delimited` (CSV/TSV), `parquet`, `stream` (standard input, pipes) and `memory`
(lists, iterables, DataFrames). `open_input` picks one.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, cast

from .. import formats
from ..errors import InputError
from ..formats import FORMATS
from .base import InputSource, is_batch_line
from .delimited import CsvInput
from .files import format_of
from .jsonl import JsonlInput
from .memory import DataFrameInput, IterableInput, ListInput, is_dataframe
from .parquet import ParquetInput
from .stream import StreamInput, open_stream

__all__ = ["FORMATS", "STDIN", "InputSource", "StreamInput", "is_batch_line", "open_input"]

STDIN = "-"
"""The input name that reads JSON Lines from standard input."""


def open_input(
    source: str | Path | Iterable[Any] | Any,
    *,
    fmt: str | None = None,
    name: str | None = None,
) -> InputSource:
    """Return a source of rows for a path, standard input, DataFrame, list or iterable.

    Every source but a stream is re-readable; a stream (`"-"`, a pipe, a binary file object)
    is read once, as JSON Lines (see `StreamInput`).

    Args:
        source: a file path; `"-"` for standard input; a binary file object (a pipe, an open
            file); a pandas DataFrame; a list of strings (each a prompt, read as
            `{"prompt": ...}`); a list of dicts; or any iterable of dicts (a one-shot
            iterator is spooled to a temporary file as it is first read).
        fmt: "jsonl", "csv", "tsv" or "parquet", overriding the file's extension (a stream
            is JSON Lines only).
        name: how errors and the journal name the source (default: the path, or
            "<stdin>", "<stream>", "<list>", "<DataFrame>", "<iterable>").

    Raises:
        InputError: the file is missing or unreadable, or its format is unknown.
        MissingExtraError: Parquet was asked for and pyarrow is not installed.
    """
    if isinstance(source, str) and source == STDIN:
        return open_stream(sys.stdin.buffer, fmt=fmt, name=name or "<stdin>")
    if isinstance(source, (io.BufferedIOBase, io.RawIOBase)):
        return open_stream(cast("IO[bytes]", source), fmt=fmt, name=name or "<stream>")
    if isinstance(source, (str, Path)):
        return _open_path(Path(source), fmt=fmt, name=name)
    if is_dataframe(source):
        return DataFrameInput(source, name=name or "<DataFrame>")
    if isinstance(source, (list, tuple)):
        return ListInput(source, name=name or "<list>")
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise InputError(
            f"cannot read rows from a {type(source).__name__}: give a file path, a pandas "
            "DataFrame, a list of prompt strings or an iterable of dicts"
        )
    return IterableInput(source, name=name or "<iterable>")


def _open_path(path: Path, *, fmt: str | None, name: str | None) -> InputSource:
    shown = name or str(path)
    if not path.exists():
        raise InputError("no such file: check the path", file=shown)
    if path.is_dir():
        raise InputError("is a directory, not a file: give the input file's path", file=shown)
    kind = format_of(path, fmt, shown)
    if kind == "parquet":
        return ParquetInput(path, name=shown)
    if kind in formats.DELIMITERS:
        return CsvInput(path, name=shown, delimiter=formats.DELIMITERS[kind])
    return JsonlInput(path, name=shown)
