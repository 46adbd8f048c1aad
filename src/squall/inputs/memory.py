"""In-memory sources: lists, iterables (a one-shot iterator is spooled) and DataFrames."""

from __future__ import annotations

import pickle
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import InputError
from ..records import Row
from .base import BATCH_SIZE, InputSource


def as_data(item: Any, line: int, name: str) -> dict[str, Any]:
    """Return an in-memory item as a row's data: a dict as it is, a string as its prompt.

    Raises:
        InputError: the item is neither a mapping nor a string.
    """
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
            yield Row(index, index + 1, as_data(item, index + 1, name))

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
            yield Row(index, index + 1, as_data(item, index + 1, name))

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
            item = as_data(item, seen + 1, self._name)
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
        for start in range(0, len(df), BATCH_SIZE):
            # to_dict turns numpy scalars into Python ones; zip renames non-string labels.
            for values in df.iloc[start : start + BATCH_SIZE].to_dict("split")["data"]:
                yield Row(index, index + 1, dict(zip(columns, values, strict=True)))
                index += 1

    def count(self) -> int | None:
        """Return the DataFrame's length."""
        return len(self._df)


def is_dataframe(obj: Any) -> bool:
    """Return True when `obj` is a pandas DataFrame (pandas is never imported here)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)
