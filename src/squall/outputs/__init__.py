"""Output files: each input row beside its answer, or OpenAI Batch API output lines.

Writers write to `<path>.partial` and rename it onto `<path>` only on `close()`, so a crash
never leaves a half-written file under the output's name; `abort()` removes the partial file.

Normal format: the input's fields, then the operation's output columns (chat:
`squall.records.OUTPUT_FIELDS`). An input field that shares a name
with an output field is kept as `input_<name>`. JSONL keeps types; CSV writes text (the
`error` column as JSON); Parquet stores nested values and the `error` column as JSON text,
and a column whose values mix types as text.

One module per format: `jsonl` (also OpenAI Batch API output lines), `delimited` (CSV/TSV)
and `parquet`; `base` holds OutputWriter, `fields` the output row's fields. `open_writer`
picks one, by the format table in squall.formats.
"""

from __future__ import annotations

from pathlib import Path

from .. import formats
from ..errors import OutputError
from ..formats import FORMATS
from ..operations import CHAT, Operation
from .base import OutputWriter
from .delimited import CsvWriter
from .fields import merge_fields
from .jsonl import BatchJsonlWriter, JsonlWriter
from .parquet import PARQUET_BATCH_ROWS, ParquetWriter

__all__ = [
    "FORMATS",
    "PARQUET_BATCH_ROWS",
    "BatchJsonlWriter",
    "CsvWriter",
    "JsonlWriter",
    "OutputWriter",
    "ParquetWriter",
    "merge_fields",
    "open_writer",
]


def open_writer(
    path: str | Path, *, batch: bool, fmt: str | None = None, operation: Operation = CHAT
) -> OutputWriter:
    """Return a writer for `path`, its format from the extension unless `fmt` is given.

    Args:
        path: the output file; its directory is created if missing.
        batch: write OpenAI Batch API output lines (the input was batch lines); JSONL only.
        fmt: "jsonl", "csv", "tsv" or "parquet", overriding the extension.
        operation: the request kind answered, which names the output columns.

    Raises:
        OutputError: the format is unknown, batch output is asked for in another format than
            JSONL, or the path cannot be written.
        MissingExtraError: Parquet output without pyarrow installed.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    if batch:
        if not formats.holds_batch_lines(kind):
            raise OutputError(
                f"{path}: the input is OpenAI batch lines, so the output is Batch API output "
                "lines, which only JSONL holds: name the output .jsonl"
            )
        return BatchJsonlWriter(path, operation=operation)
    if kind == "parquet":
        return ParquetWriter(path, operation=operation)
    if kind in formats.DELIMITERS:
        return CsvWriter(path, delimiter=formats.DELIMITERS[kind], operation=operation)
    return JsonlWriter(path, operation=operation)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        kind = formats.format_named(fmt)
        if kind is None:
            raise OutputError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")
        return kind
    found = formats.format_of_path(path)
    if found is None:
        raise OutputError(
            f"{path}: cannot tell the output format from the extension: name it .jsonl, .csv, "
            ".tsv or .parquet, or give the format explicitly"
        )
    return found
