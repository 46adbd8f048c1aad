"""The hot-path JSON codec: orjson's speed, the standard library's answers."""

from __future__ import annotations

import datetime
import json
import math
from typing import Any

import pytest

from squall import jsoncodec

# Texts where orjson alone would differ from json.loads, or refuse what it accepts.
STDLIB_TEXTS = [
    b'{"id": 123456789012345678901234567890}',  # past 64 bits: orjson gives a float
    b'{"id": -9223372036854775809}',  # just past int64
    b'{"n": 18446744073709551616, "s": "x"}',
    b'{"x": NaN, "y": Infinity, "z": -Infinity}',
    b'{"x": 1e400}',
    b'{"s": "\\ud800"}',  # a lone surrogate escape
    b'[1, 2.5, "\xe8\xae\xa1\xe7\xae\x97", null, true, {"a": {}}]',
    b'{"a": 1, "a": 2}',
    b'{"prompt": "9999999999999999999999 in a string"}',
]


@pytest.mark.parametrize("raw", STDLIB_TEXTS)
def test_loads_gives_what_json_loads_gives(raw: bytes) -> None:
    got, want = jsoncodec.loads(raw), json.loads(raw)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and 1 == 1.0 would hide a float


def test_loads_keeps_a_long_integer_exact() -> None:
    value = jsoncodec.loads(b'{"id": 123456789012345678901234567890}')["id"]
    assert type(value) is int and value == 123456789012345678901234567890


@pytest.mark.parametrize("raw", [b'{"a": ', b"\xff\xfe{}", b"", b'{"a": 1} x'])
def test_loads_refuses_what_json_refuses(raw: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        jsoncodec.loads(raw)


def test_loads_fast_hands_long_integers_and_refusals_to_the_caller() -> None:
    assert jsoncodec.loads_fast(b'{"a": 12345678901234567}') == {"a": 12345678901234567}
    for raw in (b'{"a": 1234567890123456789012}', b'{"a": NaN}', b"\xff"):
        with pytest.raises(ValueError):
            jsoncodec.loads_fast(raw)


VALUES: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": "计算 1 + 2"}], "temperature": 0.7},
    {"big": 2**70, "neg": -(2**64)},
    {"s": "\ud800 lone surrogate"},
    {"nested": {"list": [1, None, True, 1.5e-7]}},
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_body_round_trips_through_json_loads(value: Any) -> None:
    raw = jsoncodec.dumps_body(value)
    assert isinstance(raw, bytes)
    assert json.loads(raw) == value


def test_dumps_body_writes_unicode_as_utf8_not_escapes() -> None:
    assert "计算".encode() in jsoncodec.dumps_body({"q": "计算"})


def test_dumps_line_writes_what_json_default_str_writes_for_odd_values() -> None:
    when = datetime.datetime(2026, 12, 1, 8, 30)
    line = jsoncodec.dumps_line({"when": when, "day": when.date(), 3: "int key", "obj": object})
    data = json.loads(line)
    assert data["when"] == str(when) and data["day"] == str(when.date())
    assert data["3"] == "int key"
    assert data["obj"] == str(object)
    assert b"\n" not in line


def test_dumps_line_writes_nan_as_null_and_survives_surrogates() -> None:
    assert json.loads(jsoncodec.dumps_line({"x": [math.nan, math.inf]})) == {"x": [None, None]}
    assert json.loads(jsoncodec.dumps_line({"s": "\udcff"})) == {"s": "\udcff"}
