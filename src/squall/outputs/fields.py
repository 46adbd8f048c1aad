"""The fields of an output row: the input's, then the operation's output columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..operations import CHAT, Operation
from ..records import RowResult, RowState


def merge_fields(
    data: Mapping[str, Any], result: RowResult | None, operation: Operation = CHAT
) -> dict[str, Any]:
    """Return the output row: the input's fields, then the operation's output columns.

    An input field named like an output column is renamed `input_<name>`; the output columns
    are empty when `result` is None.
    """
    columns, empty = _output_shape(operation)
    fields = operation.output_fields(result) if result is not None else empty
    if columns.isdisjoint(data):
        return {**data, **fields}
    merged: dict[str, Any] = {}
    for key, value in data.items():
        if key in columns:
            key = "input_" + key
            while key in data or key in merged:
                key = "input_" + key
        merged[key] = value
    merged.update(fields)
    return merged


def _output_shape(operation: Operation) -> tuple[frozenset[str], dict[str, Any]]:
    # Worked out once per operation: merge_fields runs for every row written.
    # Keyed by the columns too: completions with logprobs has more than the registry's one.
    key = (operation.name, operation.output_columns)
    shape = _SHAPES.get(key)
    if shape is None:
        empty = operation.output_fields(RowResult(index=0, state=RowState.PENDING))
        shape = _SHAPES[key] = (frozenset(operation.output_columns), empty)
    return shape


_SHAPES: dict[tuple[str, tuple[str, ...]], tuple[frozenset[str], dict[str, Any]]] = {}


def json_text(value: Any) -> str:
    """Return `value` as JSON text (not ASCII-escaped; what JSON cannot hold as str())."""
    return json.dumps(value, ensure_ascii=False, default=str)
