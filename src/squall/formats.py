"""The file formats squall reads and writes: one table, shared by inputs and outputs.

A format is named by the file's extension unless the caller names it (`jsonl`, `csv`, `tsv`,
`parquet`, or an alias such as `ndjson`). Only JSON Lines can hold OpenAI batch lines.
Callers turn an unknown name into their own error (InputError or OutputError): this module
only answers questions.
"""

from __future__ import annotations

from pathlib import Path

FORMATS: tuple[str, ...] = ("jsonl", "csv", "tsv", "parquet")
"""Every format squall reads and writes."""

EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""Extension (lower case, with its dot) -> format."""

ALIASES: dict[str, str] = {"ndjson": "jsonl", "json": "jsonl", "jsonlines": "jsonl"}
"""Other names a caller may give a format by."""

BATCH_FORMATS: frozenset[str] = frozenset({"jsonl"})
"""The formats that can hold OpenAI batch lines (input and output)."""

DELIMITERS: dict[str, str] = {"csv": ",", "tsv": "\t"}
"""The delimited-text formats and their delimiter."""

COMPRESSED_SUFFIX = ".gz"
"""An input suffix read through gzip; the extension before it names the format."""


def format_named(fmt: str) -> str | None:
    """Return the format `fmt` names ("JSON", ".csv", "ndjson" ...), or None if none."""
    name = fmt.lower().lstrip(".")
    kind = ALIASES.get(name, name)
    return kind if kind in FORMATS else None


def format_of_path(path: Path, *, compressed: bool = False) -> str | None:
    """Return the format `path`'s extension names, or None when it names none.

    Args:
        path: the file.
        compressed: a trailing `.gz` is looked through (inputs are read through gzip).
    """
    if not compressed:
        return EXTENSIONS.get(path.suffix.lower())
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == COMPRESSED_SUFFIX:
        suffixes.pop()
    return EXTENSIONS.get(suffixes[-1]) if suffixes else None


def holds_batch_lines(kind: str) -> bool:
    """Return True when format `kind` can hold OpenAI batch lines."""
    return kind in BATCH_FORMATS
