"""CSV/TSV output: text cells, the `error` column as JSON; late new columns are kept."""

from __future__ import annotations

import csv
import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any

from ..operations import CHAT, Operation
from ..records import Row, RowResult
from .base import OutputWriter, unpickle_all
from .fields import json_text, merge_fields


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json_text(value)
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
            for spooled in unpickle_all(self._spool):
                writer.writerow([spooled.get(k, "") for k in columns])
        finally:
            self._spool.close()
            first.unlink()

    def _release(self) -> None:
        self._f.close()
        if self._spool is not None:
            self._spool.close()
