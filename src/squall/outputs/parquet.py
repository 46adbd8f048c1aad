"""Parquet output (needs pyarrow: the `parquet` extra), one schema that fits every row."""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path
from typing import IO, Any

from ..errors import MissingExtraError
from ..operations import CHAT, Operation
from ..records import Row, RowResult
from .base import OutputWriter, unpickle_all
from .fields import json_text, merge_fields

PARQUET_BATCH_ROWS = 4096
"""Rows per Parquet row group and per spooled batch."""


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
                values = [None if v is None else json_text(v) for v in values]
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
        elif len(kinds) == 1 and not kinds & _PLAIN_KINDS and not self._fixed(name, kinds):
            try:
                self._types.setdefault(name, set()).add(pa.array(values).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                self._types.setdefault(name, set()).add(None)

    def _fixed(self, name: str, kinds: set[type]) -> bool:
        """True when the operation fixes `name`'s type and `kinds` fit it (nothing to infer)."""
        fixed = self.operation.output_types.get(name)
        return fixed is not None and kinds <= _ARROW_KINDS[fixed]

    def _schema(self) -> Any:
        pa = self._pa
        fields = []
        for name in self._columns:
            kinds = self._kinds.get(name, set())
            fields.append(pa.field(name, self._arrow_type(name, kinds)))
        return pa.schema(fields)

    def _arrow_type(self, name: str, kinds: set[type]) -> Any:
        pa = self._pa
        if self._fixed(name, kinds):
            return _fixed_type(pa, self.operation.output_types[name])
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
            for count, batch in unpickle_all(self._spool):
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
    "list<float32>": {list},
}


def _fixed_type(pa: Any, name: str) -> Any:
    """The Arrow type for one of `_ARROW_KINDS`' names."""
    if name == "list<float32>":
        return pa.list_(pa.float32())
    return getattr(pa, name)()


def _text(value: Any) -> str | None:
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, (dict, list, tuple)):
        return json_text(value)
    if value.__class__ is float and value != value:
        return None
    return str(value)
