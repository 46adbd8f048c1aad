"""JSON Lines output: rows beside their answers, or OpenAI Batch API output lines."""

from __future__ import annotations

import os
from pathlib import Path

from .. import jsoncodec, openai_batch
from ..operations import CHAT, Operation
from ..records import Row, RowResult
from .base import OutputWriter
from .fields import merge_fields


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
