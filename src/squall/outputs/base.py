"""OutputWriter: writes `<path>.partial`, and renames it onto the output's path on close."""

from __future__ import annotations

import contextlib
import os
import pickle
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import OutputError
from ..operations import CHAT, Operation
from ..records import Row, RowResult

_WHAT_NEXT = (
    "the journal still holds every answer, so rerunning with a writable output path "
    "writes the file without sending anything again"
)


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


def unpickle_all(f: IO[bytes]) -> Iterator[Any]:
    """Yield every value pickled to `f`, from where it stands to its end."""
    while True:
        try:
            yield pickle.load(f)
        except EOFError:
            return
