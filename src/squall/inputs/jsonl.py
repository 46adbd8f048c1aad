"""JSON Lines: one object per line, from a file or a stream; blank lines are skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .. import jsoncodec
from ..errors import InputError
from ..records import Row
from .base import InputSource
from .files import decode, open_binary

_BOM = b"\xef\xbb\xbf"


class JsonlInput(InputSource):
    """Rows of a JSON Lines file: one JSON object per line; blank lines are skipped."""

    def __init__(self, path: Path, *, name: str) -> None:
        super().__init__(name, path)
        self.path: Path = path

    def _read(self) -> Iterator[Row]:
        with open_binary(self.path, self.name) as f:
            yield from jsonl_rows(f, self.name)


def jsonl_rows(f: IO[bytes], shown: str) -> Iterator[Row]:
    """Yield the rows of JSON Lines read from `f`, numbered from line 1; blank lines skipped.

    Raises:
        InputError: a line is not one JSON object, is not UTF-8, or `f` cannot be read.
    """
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
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                    start += len(_BOM)
            if not raw.strip():
                continue
            yield Row(index, line_no, json_object(raw, line_no, start, shown))
            index += 1
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot be read: {exc}", file=shown) from None


def json_object(raw: bytes, line_no: int, start: int, shown: str) -> dict[str, Any]:
    """Return one line's JSON object.

    Raises:
        InputError: the line is not UTF-8, not JSON (naming the fault's column), or not an
            object.
    """
    try:
        data = jsoncodec.loads_fast(raw)
    except ValueError:  # stdlib decides, and names the fault
        data = _stdlib_loads(decode(raw, line_no, start, shown), line_no, shown)
    if not isinstance(data, dict):
        raise InputError(
            f"is a JSON {json_kind(data)}, not an object: each line must be "
            'one row like {"prompt": "..."}',
            file=shown,
            line=line_no,
        )
    return data


def _stdlib_loads(text: str, line_no: int, shown: str) -> Any:
    # Without its line break: a line cut short is then at fault at its end, not at "column 1"
    # of the (empty) line after the break, where the decoder would count from.
    line = text.rstrip("\r\n")
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        column = exc.pos + 1  # characters, counted from 1; the line holds no line break
        where = " (the end of the line)" if exc.pos >= len(line) else ""
        raise InputError(
            f"is not valid JSON: {exc.msg.removesuffix(' at')} at column {column}{where}",
            file=shown,
            line=line_no,
        ) from None


def json_kind(value: Any) -> str:
    """Return the JSON name of `value`'s type: array, string, null, boolean or number."""
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"
