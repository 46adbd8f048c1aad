"""Parquet files (needs pyarrow: the `parquet` extra), read a record batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingExtraError
from ..records import Row
from .base import BATCH_SIZE, InputSource


class ParquetInput(InputSource):
    """Rows of a Parquet file, read a record batch at a time; line numbers count rows."""

    def __init__(self, path: Path, *, name: str) -> None:
        super().__init__(name, path)
        self.path: Path = path
        self._pq = import_pyarrow_parquet("Reading Parquet")

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
            for batch in pf.iter_batches(batch_size=BATCH_SIZE):
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


def import_pyarrow_parquet(what: str) -> Any:
    """Return pyarrow.parquet, or raise MissingExtraError naming `what` needed it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError(what, "parquet", "pyarrow") from None
    return pq
