"""Delimited text (CSV, TSV) with a header line; every value stays a string."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError
from ..records import Row
from .base import InputSource
from .files import decode, open_binary

# csv refuses fields over 128 KiB by default; long documents as prompts are normal here.
_CSV_FIELD_LIMIT = 2**31 - 1


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
            yield decode(raw, line_no, start, self.name)

    def _read(self) -> Iterator[Row]:
        shown = self.name
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        with open_binary(self.path, shown) as f:
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
