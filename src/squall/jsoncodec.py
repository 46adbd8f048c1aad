"""JSON on the hot path: orjson where it gives what the standard library gives, else stdlib.

Every row is parsed from the input, sent as a request body, answered in a response body and
written to the output: four JSON passes per row, which at thousands of rows a second were the
largest share of squall's own CPU (bench/overhead). orjson does each several times faster.

Reading gives exactly what `json.loads` gives: a text orjson refuses (NaN, lone surrogates,
numbers too large for a double), or one holding an integer too long for 64 bits (orjson would
make it a float), is parsed by `json` instead. Writing differs from `json.dumps` only in
form: no spaces after separators, NaN and infinities as null (valid JSON, where stdlib writes
`NaN`), dataclasses and enums by their fields and values. Row fingerprints use
`dumps_sorted` (`prompts.py`); journals made before it keep the `json` text they were made with.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# An integer literal of 19 or more digits may not fit 64 bits: orjson would parse it as a
# float and lose digits. Digits inside strings count too; those texts just take stdlib's path.
# Mapping every digit to "9" and the rest to "." makes the test one substring search in C; a
# regex (\d{19}) cost ten times as much as orjson's parse.
_DIGITS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_RUN = b"9" * 19


def _long_int(raw: bytes) -> bool:
    # find(), not `in`: `in` first tries its operand as an int and raises, which cost more
    # than the search.
    return len(raw) >= 19 and raw.translate(_DIGITS).find(_RUN) >= 0


_OUT_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_SORTED_OPTIONS = _OUT_OPTIONS | orjson.OPT_SORT_KEYS


def loads(raw: bytes) -> Any:
    """Return the value of the JSON text `raw` (UTF-8), as `json.loads` would.

    Raises:
        ValueError: `raw` is not JSON (json.JSONDecodeError) or not UTF-8 (UnicodeDecodeError).
    """
    try:
        return loads_fast(raw)
    except ValueError:  # stdlib decides, and gives its own message
        return json.loads(raw)


def loads_fast(raw: bytes) -> Any:
    """Return the value of `raw` by orjson, or raise ValueError where stdlib must decide.

    For callers with their own stdlib fallback and error messages (the input readers).
    """
    if _long_int(raw):
        raise ValueError("a long integer: parse with json")
    return orjson.loads(raw)


def dumps_body(value: Any) -> bytes:
    """Return `value` as compact UTF-8 JSON, for a request body (see `_dumps`)."""
    return _dumps(value, 0)


def dumps_line(value: Any) -> bytes:
    """Return `value` as one line of UTF-8 JSON (no newline), for the output files.

    Values JSON has no type for are written as `str(value)`, datetimes included (as stdlib's
    `default=str` writes them); NaN and infinities as null.
    """
    return _dumps(value, _OUT_OPTIONS)


def dumps_sorted(value: Any) -> bytes | None:
    """Return `value` as compact UTF-8 JSON with keys sorted, or None where it cannot.

    None where orjson cannot tell it apart from a near neighbour (a null it wrote may have
    been NaN) or refuses it.

    For row fingerprints: the caller hashes another text where this gives None.
    """
    try:
        out = orjson.dumps(value, default=str, option=_SORTED_OPTIONS)
    except TypeError:
        return None
    # find(), not `in` (see _long_int). "null" inside a string also lands here: only slower.
    return None if out.find(b"null") >= 0 else out


def _dumps(value: Any, option: int) -> bytes:
    # What orjson refuses (a lone surrogate, an int past 64 bits, a key that is not text)
    # goes to stdlib; a string that is not valid Unicode goes \u-escaped rather than failing.
    try:
        return orjson.dumps(value, default=str, option=option)
    except TypeError:
        pass
    value = _nan_to_none(value)  # as orjson does: stdlib would write NaN, which is not JSON
    try:
        return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, default=str).encode("ascii")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value
