"""Input rows from files, DataFrames, lists and iterables, streamed in constant memory.

Every source but a stream can be read again from the start: files are reopened for each
pass; a one-shot iterator is spooled to a temporary file the first time through so that
later passes replay it without holding it in memory. A stream (standard input as `"-"`, a
pipe, a binary file object) is JSON Lines read once: its first row is peeked and kept, and
a second `rows()` is refused (`StreamInput`).

Formats, by extension (`fmt` overrides; a `.gz` suffix is read through gzip), from the table
in squall.formats: `.jsonl`/`.ndjson`/`.json` (JSON Lines), `.csv`, `.tsv`, `.parquet`
(needs pyarrow).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import sys
import tempfile
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

from . import formats, jsoncodec, openai_batch
from .errors import InputError, MissingExtraError
from .formats import FORMATS
from .records import Row

__all__ = ["FORMATS", "STDIN", "InputSource", "StreamInput", "is_batch_line", "open_input"]

STDIN = "-"
"""The input name that reads JSON Lines from standard input."""

_BATCH_SIZE = 1024
# csv refuses fields over 128 KiB by default; long documents as prompts are normal here.
_CSV_FIELD_LIMIT = 2**31 - 1


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
        return _open_stream(sys.stdin.buffer, fmt=fmt, name=name or "<stdin>")
    if isinstance(source, (io.BufferedIOBase, io.RawIOBase)):
        return _open_stream(cast("IO[bytes]", source), fmt=fmt, name=name or "<stream>")
    if isinstance(source, (str, Path)):
        return _open_path(Path(source), fmt=fmt, name=name)
    if _is_dataframe(source):
        return DataFrameInput(source, name=name or "<DataFrame>")
    if isinstance(source, (list, tuple)):
        return ListInput(source, name=name or "<list>")
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise InputError(
            f"cannot read rows from a {type(source).__name__}: give a file path, a pandas "
            "DataFrame, a list of prompt strings or an iterable of dicts"
        )
    return IterableInput(source, name=name or "<iterable>")


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


# --- files -----------------------------------------------------------------------------------


def _open_path(path: Path, *, fmt: str | None, name: str | None) -> InputSource:
    shown = name or str(path)
    if not path.exists():
        raise InputError("no such file: check the path", file=shown)
    if path.is_dir():
        raise InputError("is a directory, not a file: give the input file's path", file=shown)
    kind = _format_of(path, fmt, shown)
    if kind == "parquet":
        return ParquetInput(path, name=shown)
    if kind in formats.DELIMITERS:
        return CsvInput(path, name=shown, delimiter=formats.DELIMITERS[kind])
    return JsonlInput(path, name=shown)


def _format_of(path: Path, fmt: str | None, shown: str) -> str:
    if fmt is not None:
        kind = formats.format_named(fmt)
        if kind is None:
            raise InputError(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
        return kind
    found = formats.format_of_path(path, compressed=True)
    if found is None:
        raise InputError(
            "cannot tell the format from the extension: name the file .jsonl, .csv, .tsv or "
            ".parquet, or give the format explicitly (jsonl, csv, tsv, parquet)",
            file=shown,
        )
    return found


def _open_binary(path: Path, shown: str) -> IO[bytes]:
    try:
        if path.suffix.lower() == formats.COMPRESSED_SUFFIX:
            return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is an IO[bytes]
        return path.open("rb")
    except FileNotFoundError:
        raise InputError("no such file: check the path", file=shown) from None
    except PermissionError:
        raise InputError("cannot be read: permission denied", file=shown) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror or exc}", file=shown) from None


def _decode(raw: bytes, line: int, file_offset: int, shown: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise InputError(
            f"byte 0x{bad} at byte {exc.start + 1} of the line (byte {file_offset + exc.start} "
            "of the file) is not UTF-8: re-save the file as UTF-8, e.g. "
            "`iconv -f GBK -t UTF-8 in.jsonl > out.jsonl`",
            file=shown,
            line=line,
        ) from None


class JsonlInput(InputSource):
    """Rows of a JSON Lines file: one JSON object per line; blank lines are skipped."""

    def __init__(self, path: Path, *, name: str) -> None:
        super().__init__(name, path)
        self.path: Path = path

    def _read(self) -> Iterator[Row]:
        with _open_binary(self.path, self.name) as f:
            yield from _jsonl_rows(f, self.name)


def _jsonl_rows(f: IO[bytes], shown: str) -> Iterator[Row]:
    """Yield the rows of JSON Lines read from `f`, numbered from line 1; blank lines skipped."""
    index = 0
    offset = 0
    try:
        for line_no, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            if line_no == 1:
                if raw.lstrip().startswith(b"["):
                    raise InputError(
                        "is a JSON array; squall reads JSON Lines, one object per line: "
                        "convert it with `jq -c '.[]' in.json > in.jsonl`",
                        file=shown,
                        line=1,
                    )
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                    start += 3
            if not raw.strip():
                continue
            yield Row(index, line_no, _json_object(raw, line_no, start, shown))
            index += 1
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot be read: {exc}", file=shown) from None


def _json_object(raw: bytes, line_no: int, start: int, shown: str) -> dict[str, Any]:
    try:
        data = jsoncodec.loads_fast(raw)
    except ValueError:  # stdlib decides, and names the fault
        text = _decode(raw, line_no, start, shown)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"is not valid JSON: {exc.msg} at column {exc.colno}",
                file=shown,
                line=line_no,
            ) from None
    if not isinstance(data, dict):
        raise InputError(
            f"is a JSON {_json_kind(data)}, not an object: each line must be "
            'one row like {"prompt": "..."}',
            file=shown,
            line=line_no,
        )
    return data


def _open_stream(stream: IO[bytes], *, fmt: str | None, name: str) -> StreamInput:
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
        self._reader = _jsonl_rows(stream, name)
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


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


class CsvInput(InputSource):
    """Rows of a CSV/TSV file with a header line; every value stays a string."""

    def __init__(self, path: Path, *, name: str, delimiter: str = ",") -> None:
        super().__init__(name, path)
        self.path: Path = path
        self.delimiter = delimiter

    def _lines(self, f: IO[bytes]) -> Iterator[str]:
        # Decoding line by line (not through TextIOWrapper) lets a bad byte be reported
        # with its true line and offset.
        offset = 0
        for line_no, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
                start += 3
            yield _decode(raw, line_no, start, self.name)

    def _read(self) -> Iterator[Row]:
        shown = self.name
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        with _open_binary(self.path, shown) as f:
            reader = csv.reader(self._lines(f), delimiter=self.delimiter)
            header: list[str] | None = None
            index = 0
            while True:
                start = reader.line_num + 1
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise InputError(
                        f"is not valid CSV: {exc}", file=shown, line=reader.line_num
                    ) from None
                except OSError as exc:
                    raise InputError(f"cannot be read: {exc}", file=shown) from None
                if not record:
                    continue
                if header is None:
                    header = self._check_header(record, start)
                    continue
                if len(record) != len(header):
                    raise InputError(
                        f"has {len(record)} fields but the header has {len(header)}: "
                        "quote values that contain the delimiter or a line break",
                        file=shown,
                        line=start,
                    )
                yield Row(index, start, dict(zip(header, record, strict=True)))
                index += 1
            if header is None:
                raise InputError("is empty: it needs a header line and rows", file=shown)

    def _check_header(self, record: list[str], line: int) -> list[str]:
        seen: set[str] = set()
        for column in record:
            if column in seen:
                raise InputError(
                    "the header names this column twice: rename one",
                    file=self.name,
                    line=line,
                    field=column,
                )
            seen.add(column)
        return record

    def _empty_error(self) -> InputError:
        return InputError("has a header but no rows: nothing to send", file=self.name)


class ParquetInput(InputSource):
    """Rows of a Parquet file, read a record batch at a time; line numbers count rows."""

    def __init__(self, path: Path, *, name: str) -> None:
        super().__init__(name, path)
        self.path: Path = path
        self._pq = _import_pyarrow_parquet("Reading Parquet")

    def _open(self) -> Any:
        try:
            return self._pq.ParquetFile(self.path)
        except PermissionError:
            raise InputError("cannot be read: permission denied", file=self.name) from None
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses here
            raise InputError(f"is not a readable Parquet file: {exc}", file=self.name) from None

    def _read(self) -> Iterator[Row]:
        pf = self._open()
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=_BATCH_SIZE):
                for data in batch.to_pylist():
                    yield Row(index, index + 1, data)
                    index += 1
        finally:
            pf.close()

    def count(self) -> int | None:
        """Return the row count from the Parquet footer."""
        pf = self._open()
        try:
            return int(pf.metadata.num_rows)
        finally:
            pf.close()


def _import_pyarrow_parquet(what: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError(what, "parquet", "pyarrow") from None
    return pq


# --- in-memory sources -----------------------------------------------------------------------


def _as_data(item: Any, line: int, name: str) -> dict[str, Any]:
    if type(item) is dict:
        return item
    if isinstance(item, str):
        return {"prompt": item}
    if isinstance(item, Mapping):
        return dict(item)
    raise InputError(
        f"is a {type(item).__name__}: give dicts (one per row) or strings (one prompt each)",
        file=name,
        line=line,
    )


class ListInput(InputSource):
    """Rows of a list of dicts or of prompt strings; line numbers count items from 1."""

    def __init__(self, items: list[Any] | tuple[Any, ...], *, name: str) -> None:
        super().__init__(name)
        self._items = items

    def _read(self) -> Iterator[Row]:
        name = self.name
        for index, item in enumerate(self._items):
            yield Row(index, index + 1, _as_data(item, index + 1, name))

    def count(self) -> int | None:
        """Return the list's length."""
        return len(self._items)


class IterableInput(InputSource):
    """Rows of any iterable of dicts or strings; a one-shot iterator is spooled for replay."""

    def __init__(self, items: Iterable[Any], *, name: str) -> None:
        super().__init__(name)
        self._items: Iterable[Any] = items if iter(items) is not items else _Spool(items, name)

    def _read(self) -> Iterator[Row]:
        name = self.name
        for index, item in enumerate(self._items):
            yield Row(index, index + 1, _as_data(item, index + 1, name))

    def count(self) -> int | None:
        """Return the count once a one-shot iterator has been read to its end, else None."""
        if isinstance(self._items, _Spool):
            return self._items.count_if_done()
        return None


class _Spool:
    """Replays a one-shot iterator: items are pickled to a temporary file as first read.

    Several replays may be open at once; each keeps its own offset into the file.
    """

    def __init__(self, source: Iterable[Any], name: str) -> None:
        self._source = iter(source)
        self._name = name
        self._file = tempfile.TemporaryFile(prefix="squall-input-")  # noqa: SIM115 - lives as long as the spool
        self._finalizer = weakref.finalize(self, self._file.close)
        self._end = 0  # bytes written so far
        self._count = 0  # items spooled so far
        self._done = False

    def count_if_done(self) -> int | None:
        return self._count if self._done else None

    def __iter__(self) -> Iterator[Any]:
        f = self._file
        pos = 0
        seen = 0
        while True:
            if seen < self._count:
                if f.tell() != pos:
                    f.seek(pos)
                item = pickle.load(f)
                pos = f.tell()
                seen += 1
                yield item
                continue
            if self._done:
                return
            try:
                item = next(self._source)
            except StopIteration:
                self._done = True
                return
            item = _as_data(item, seen + 1, self._name)
            f.seek(self._end)
            try:
                pickle.dump(item, f, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # pickling can fail with any error from user objects
                raise InputError(
                    f"cannot be kept for the engine's later passes ({exc}): pass a list, a "
                    "DataFrame or a file instead of a one-shot iterator",
                    file=self._name,
                    line=seen + 1,
                ) from None
            self._end = pos = f.tell()
            self._count += 1
            seen += 1
            yield item


class DataFrameInput(InputSource):
    """Rows of a pandas DataFrame, converted a slice at a time; line numbers count from 1."""

    def __init__(self, df: Any, *, name: str) -> None:
        super().__init__(name)
        columns = [str(c) for c in df.columns]
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise InputError(
                "the DataFrame has this column twice: rename one", file=name, field=dup
            )
        self._df = df
        self._columns = columns

    def _read(self) -> Iterator[Row]:
        df = self._df
        columns = self._columns
        index = 0
        for start in range(0, len(df), _BATCH_SIZE):
            # to_dict turns numpy scalars into Python ones; zip renames non-string labels.
            for values in df.iloc[start : start + _BATCH_SIZE].to_dict("split")["data"]:
                yield Row(index, index + 1, dict(zip(columns, values, strict=True)))
                index += 1

    def count(self) -> int | None:
        """Return the DataFrame's length."""
        return len(self._df)


def _is_dataframe(obj: Any) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)
