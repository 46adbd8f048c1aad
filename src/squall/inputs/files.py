"""Opening an input file: its format from the shared table, its bytes (through gzip if .gz)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from .. import formats
from ..errors import InputError
from ..formats import FORMATS


def format_of(path: Path, fmt: str | None, shown: str) -> str:
    """Return the format `fmt` names, else the one `path`'s extension names.

    Raises:
        InputError: `fmt` names no format, or the extension names none.
    """
    if fmt is not None:
        kind = formats.format_named(fmt)
        if kind is None:
            raise InputError(f"unknown input format {fmt!r}: use one of {', '.join(FORMATS)}")
        return kind
    found = formats.format_of_path(path, compressed=True)
    if found is None:
        raise InputError(
            "cannot tell the format from the extension: name the file .jsonl, .csv, .tsv or "
            ".parquet, or give the format explicitly (jsonl, csv, tsv, parquet)",
            file=shown,
        )
    return found


def open_binary(path: Path, shown: str) -> IO[bytes]:
    """Return `path` open for reading bytes, decompressed when it ends in .gz.

    Raises:
        InputError: the file is missing or cannot be read.
    """
    try:
        if path.suffix.lower() == formats.COMPRESSED_SUFFIX:
            return gzip.open(path, "rb")  # type: ignore[return-value]  # GzipFile is an IO[bytes]
        return path.open("rb")
    except FileNotFoundError:
        raise InputError("no such file: check the path", file=shown) from None
    except PermissionError:
        raise InputError("cannot be read: permission denied", file=shown) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror or exc}", file=shown) from None


def decode(raw: bytes, line: int, file_offset: int, shown: str) -> str:
    """Return one line's bytes as text.

    Raises:
        InputError: the line is not UTF-8, naming the byte and its offset in line and file.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise InputError(
            f"byte 0x{bad} at byte {exc.start + 1} of the line (byte {file_offset + exc.start} "
            "of the file) is not UTF-8: re-save the file as UTF-8, e.g. "
            "`iconv -f GBK -t UTF-8 in.jsonl > out.jsonl`",
            file=shown,
            line=line,
        ) from None
