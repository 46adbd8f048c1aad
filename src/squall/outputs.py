"""Output files: each input row beside its answer, or OpenAI Batch API output lines.

Writers write to `<path>.partial` and rename it onto `<path>` only on `close()`, so a crash
never leaves a half-written file under the output's name; `abort()` removes the partial file.

Normal format: the input's fields, then the operation's output columns (chat:
`squall.records.OUTPUT_FIELDS`). An input field that shares a name
with an output field is kept as `input_<name>`. JSONL keeps types; CSV writes text (the
`error` column as JSON); Parquet stores nested values and the `error` column as JSON text,
and a column whose values mix types as text.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from . import formats, jsoncodec, openai_batch
from .errors import MissingExtraError, OutputError
from .formats import FORMATS
from .operations import CHAT, Operation
from .records import Row, RowResult, RowState

__all__ = [
    "FORMATS",
    "PARQUET_BATCH_ROWS",
    "BatchJsonlWriter",
    "CsvWriter",
    "JsonlWriter",
    "OutputWriter",
    "ParquetWriter",
    "merge_fields",
    "open_writer",
]

PARQUET_BATCH_ROWS = 4096
"""Rows per Parquet row group and per spooled batch."""

_WHAT_NEXT = (
    "the journal still holds every answer, so rerunning with a writable output path "
    "writes the file without sending anything again"
)


def open_writer(
    path: str | Path, *, batch: bool, fmt: str | None = None, operation: Operation = CHAT
) -> OutputWriter:
    """Return a writer for `path`, its format from the extension unless `fmt` is given.

    Args:
        path: the output file; its directory is created if missing.
        batch: write OpenAI Batch API output lines (the input was batch lines); JSONL only.
        fmt: "jsonl", "csv", "tsv" or "parquet", overriding the extension.
        operation: the request kind answered, which names the output columns.

    Raises:
        OutputError: the format is unknown, batch output is asked for in another format than
            JSONL, or the path cannot be written.
        MissingExtraError: Parquet output without pyarrow installed.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    if batch:
        if not formats.holds_batch_lines(kind):
            raise OutputError(
                f"{path}: the input is OpenAI batch lines, so the output is Batch API output "
                "lines, which only JSONL holds: name the output .jsonl"
            )
        return BatchJsonlWriter(path, operation=operation)
    if kind == "parquet":
        return ParquetWriter(path, operation=operation)
    if kind in formats.DELIMITERS:
        return CsvWriter(path, delimiter=formats.DELIMITERS[kind], operation=operation)
    return JsonlWriter(path, operation=operation)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        kind = formats.format_named(fmt)
        if kind is None:
            raise OutputError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
        return kind
    found = formats.format_of_path(path)
    if found is None:
        raise OutputError(
            f"{path}: cannot tell the output format from the extension: name it .jsonl, .csv, "
            ".tsv or .parquet, or give the format explicitly"
        )
    return found


def merge_fields(
    data: Mapping[str, Any], result: RowResult | None, operation: Operation = CHAT
) -> dict[str, Any]:
    """Return the output row: the input's fields, then the operation's output columns.

    An input field named like an output column is renamed `input_<name>`; the output columns
    are empty when `result` is None.
    """
    columns, empty = _output_shape(operation)
    fields = operation.output_fields(result) if result is not None else empty
    if columns.isdisjoint(data):
        return {**data, **fields}
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if key in columns:
            key = "input_" + key
            while key in data or key in merged:
                key = "input_" + key
        merged[key] = value
    merged.update(fields)
    return merged


def _output_shape(operation: Operation) -> tuple[frozenset[str], dict[str, Any]]:
    # Worked out once per operation: merge_fields runs for every row written.
    shape = _SHAPES.get(operation.name)
    if shape is None:
        empty = operation.output_fields(RowResult(index=0, state=RowState.PENDING))
        shape = _SHAPES[operation.name] = (frozenset(operation.output_columns), empty)
    return shape


_SHAPES: dict[str, tuple[frozenset[str], dict[str, Any]]] = {}


class OutputWriter(ABC):
    """Writes output rows to `<path>.partial`; `close()` publishes it as `path`.

    Use as a context manager: leaving the block normally closes, leaving it on an exception
    aborts (the partial file is removed; the journal keeps the answers).
    """

    def __init__(self, path: Path, *, operation: Operation = CHAT) -> None:
        self.path = path
        self.operation = operation
        self.partial_path = path.with_name(path.name + ".partial")
        self.rows_written = 0
        self._closed = False
        if path.is_dir():
            raise OutputError(f"{path}: is a directory: give a file path for the output")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"{path.parent}: cannot create the output's directory ({_reason(exc)}): "
                "choose another output path"
            ) from None

    def write(self, row: Row, result: RowResult | None) -> None:
        """Append `row` with its result (None: not answered yet).

        Raises:
            OutputError: the file cannot be written (disk full, removed, ...).
        """
        try:
            self._write(row, result)
        except OSError as exc:
            raise self._error(exc) from None
        self.rows_written += 1

    def close(self) -> None:
        """Finish the file and rename it onto the output path.

        Raises:
            OutputError: the file cannot be finished or renamed.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._finish()
            os.replace(self.partial_path, self.path)
        except OSError as exc:
            self._discard()
            raise self._error(exc) from None
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Stop writing and remove the partial file; the output path is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._discard()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @abstractmethod
    def _write(self, row: Row, result: RowResult | None) -> None:
        """Write one row."""

    @abstractmethod
    def _finish(self) -> None:
        """Flush and close the partial file."""

    @abstractmethod
    def _release(self) -> None:
        """Close open handles without finishing; errors are ignored."""

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._release()
        with contextlib.suppress(OSError):
            self.partial_path.unlink()

    def _open_text(self) -> IO[str]:
        try:
            return self.partial_path.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise self._error(exc) from None

    def _open_binary(self) -> IO[bytes]:
        try:
            return self.partial_path.open("wb")
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> OutputError:
        return OutputError(f"{self.path}: cannot be written ({_reason(exc)}); {_WHAT_NEXT}")


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class JsonlWriter(OutputWriter):
    """One JSON object per line: the input row's fields then squall's."""

    def __init__(self, path: Path, *, operation: Operation = CHAT) -> None:
        super().__init__(path, operation=operation)
        self._f = self._open_binary()

    def _write(self, row: Row, result: RowResult | None) -> None:
        # dumps_line writes NaN as null itself (pandas' missing value is not JSON), nested too.
        self._f.write(jsoncodec.dumps_line(merge_fields(row.data, result, self.operation)) + b"\n")

    def _finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def _release(self) -> None:
        self._f.close()


class BatchJsonlWriter(OutputWriter):
    """OpenAI Batch API output lines, one per input batch line, in input order."""

    def __init__(self, path: Path, *, operation: Operation = CHAT) -> None:
        super().__init__(path, operation=operation)
        self._f = self._open_binary()

    def _write(self, row: Row, result: RowResult | None) -> None:
        line = openai_batch.output_line(row, result, self.operation)
        self._f.write(jsoncodec.dumps_line(line) + b"\n")

    def _finish(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def _release(self) -> None:
        self._f.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return _dumps(value)
    if value.__class__ is float and value != value:
        return ""
    return value


class CsvWriter(OutputWriter):
    """CSV/TSV with a header; the columns come from the first row.

    If a later row brings new columns, rows from then on are spooled and the file is
    rebuilt on close with every column, so no value is dropped.
    """

    def __init__(self, path: Path, *, delimiter: str = ",", operation: Operation = CHAT) -> None:
        super().__init__(path, operation=operation)
        self.delimiter = delimiter
        self._f = self._open_text()
        self._writer = csv.writer(self._f, delimiter=delimiter)
        self._header: list[str] | None = None
        self._columns: dict[str, None] = {}  # every column seen, in order of appearance
        self._spool: IO[bytes] | None = None

    def _write(self, row: Row, result: RowResult | None) -> None:
        merged = merge_fields(row.data, result, self.operation)
        if self._header is None:
            self._header = list(merged)
            self._columns = dict.fromkeys(merged)
            self._writer.writerow(self._header)
        if (
            self._spool is None
            and len(merged) == len(self._header)
            and all(a == b for a, b in zip(merged, self._header, strict=True))
        ):
            self._writer.writerow([_cell(v) for v in merged.values()])
            return
        for key in merged:
            if key not in self._columns:
                self._columns[key] = None
        if self._spool is None and len(self._columns) == len(self._header):
            get = merged.get
            self._writer.writerow([_cell(get(k)) for k in self._header])
            return
        if self._spool is None:
            self._spool = tempfile.TemporaryFile(  # noqa: SIM115 - closed in _finish/_release
                prefix="squall-out-", dir=self.path.parent
            )
        pickle.dump({k: _cell(v) for k, v in merged.items()}, self._spool)

    def _finish(self) -> None:
        if self._header is None:  # no rows: still write the columns squall adds
            self._writer.writerow(self.operation.output_columns)
        if self._spool is not None:
            self._rebuild()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def _rebuild(self) -> None:
        # The first rows went out under the first header; copy them, then the spooled rows,
        # under the header of every column seen.
        assert self._spool is not None and self._header is not None
        columns = list(self._columns)
        self._f.close()
        first = self.partial_path.with_name(self.partial_path.name + ".head")
        os.replace(self.partial_path, first)
        try:
            self._f = self._open_text()
            writer = csv.writer(self._f, delimiter=self.delimiter)
            writer.writerow(columns)
            pad = [""] * (len(columns) - len(self._header))
            # Answers longer than csv's default 128 KiB field limit must read back too.
            csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
            with first.open(encoding="utf-8", newline="") as f:
                reader = csv.reader(f, delimiter=self.delimiter)
                next(reader)
                for record in reader:
                    writer.writerow(record + pad)
            self._spool.seek(0)
            for spooled in _unpickle_all(self._spool):
                writer.writerow([spooled.get(k, "") for k in columns])
        finally:
            self._spool.close()
            first.unlink()

    def _release(self) -> None:
        self._f.close()
        if self._spool is not None:
            self._spool.close()


def _unpickle_all(f: IO[bytes]) -> Iterator[Any]:
    while True:
        try:
            yield pickle.load(f)
        except EOFError:
            return


class ParquetWriter(OutputWriter):
    """Parquet, in row groups of `PARQUET_BATCH_ROWS`.

    Rows are spooled column by column to a temporary file while their types are noted, and
    the file is written on close with one schema that fits every row: a column whose
    values mix types is stored as text, nested values and `error` as JSON text.
    """

    def __init__(self, path: Path, *, operation: Operation = CHAT) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtraError("Writing Parquet", "parquet", "pyarrow") from None
        super().__init__(path, operation=operation)
        self._pa = pa
        self._pq = pq
        try:
            # Fail now, not after the run, if the output cannot be written.
            self.partial_path.open("wb").close()
            self._spool: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115 - closed in _finish/_release
                prefix="squall-out-", dir=path.parent
            )
        except OSError as exc:
            raise self._error(exc) from None
        self._batch: list[dict[str, Any]] = []
        self._columns: dict[str, None] = {}
        self._kinds: dict[str, set[type]] = {}
        self._bigint: set[str] = set()  # int columns with values beyond int64
        self._types: dict[str, set[Any]] = {}  # arrow types inferred for other objects

    def _write(self, row: Row, result: RowResult | None) -> None:
        self._batch.append(merge_fields(row.data, result, self.operation))
        if len(self._batch) >= PARQUET_BATCH_ROWS:
            self._flush_batch()

    def _flush_batch(self) -> None:
        rows = self._batch
        self._batch = []
        for row in rows:
            if len(row) != len(self._columns) or any(k not in self._columns for k in row):
                for key in row:
                    self._columns.setdefault(key, None)
        batch: dict[str, list[Any]] = {}
        for name in self._columns:
            values = [row.get(name) for row in rows]
            if name == "error":
                values = [None if v is None else _dumps(v) for v in values]
            batch[name] = values
            self._note_kinds(name, values)
        pickle.dump((len(rows), batch), self._spool, protocol=pickle.HIGHEST_PROTOCOL)

    def _note_kinds(self, name: str, values: list[Any]) -> None:
        kinds = set(map(type, values))
        kinds.discard(type(None))
        self._kinds.setdefault(name, set()).update(kinds)
        pa = self._pa
        if kinds == {int} and name not in self._bigint:
            try:
                pa.array(values, type=pa.int64())
            except (pa.ArrowInvalid, OverflowError):
                self._bigint.add(name)
        elif len(kinds) == 1 and not kinds & _PLAIN_KINDS:
            try:
                self._types.setdefault(name, set()).add(pa.array(values).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                self._types.setdefault(name, set()).add(None)

    def _schema(self) -> Any:
        pa = self._pa
        fields = []
        for name in self._columns:
            kinds = self._kinds.get(name, set())
            fields.append(pa.field(name, self._arrow_type(name, kinds)))
        return pa.schema(fields)

    def _arrow_type(self, name: str, kinds: set[type]) -> Any:
        pa = self._pa
        fixed = self.operation.output_types.get(name)
        if fixed is not None and kinds <= _ARROW_KINDS[fixed]:
            return getattr(pa, fixed)()
        if not kinds or kinds == {str}:
            return pa.string()
        if kinds == {bool}:
            return pa.bool_()
        if kinds == {int}:
            return pa.string() if name in self._bigint else pa.int64()
        if kinds <= {int, float}:
            return pa.float64()
        if kinds == {bytes}:
            return pa.binary()
        types = self._types.get(name, set())
        if len(kinds) == 1 and len(types) == 1 and None not in types:
            return next(iter(types))
        return pa.string()

    def _finish(self) -> None:
        pa = self._pa
        if self._batch:
            self._flush_batch()
        if not self._columns:  # no rows: still write the columns squall adds
            self._columns = dict.fromkeys(self.operation.output_columns)
        schema = self._schema()
        self._spool.seek(0)
        writer = self._pq.ParquetWriter(self.partial_path, schema)
        try:
            for count, batch in _unpickle_all(self._spool):
                arrays = []
                for field in schema:
                    values = batch.get(field.name)
                    if values is None:
                        arrays.append(pa.nulls(count, type=field.type))
                    else:
                        arrays.append(self._array(values, field.type))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        finally:
            writer.close()
            self._spool.close()

    def _array(self, values: list[Any], type_: Any) -> Any:
        pa = self._pa
        if type_ == pa.string():
            values = [_text(v) for v in values]
        elif type_ == pa.float64():
            # Arrow refuses ints a double cannot hold exactly; Python rounds them instead.
            values = [float(v) if v.__class__ is int else v for v in values]
        return pa.array(values, type=type_)

    def _release(self) -> None:
        self._spool.close()


_PLAIN_KINDS: set[type] = {str, bool, int, float, bytes, dict, list}
# The Python values each fixed output column type holds (an operation's `output_types`).
_ARROW_KINDS: dict[str, set[type]] = {
    "string": {str},
    "int64": {int},
    "float64": {int, float},
}


def _text(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, (dict, list, tuple)):
        return _dumps(value)
    if value.__class__ is float and value != value:
        return None
    return str(value)
