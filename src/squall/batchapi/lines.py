"""Batch files: the input lines squall writes for a chunk, and the result lines it reads back.

Each line's `custom_id` is squall's own (`squall-<row index>`), not a batch input's: it is
unique in the file by construction, and maps an answer back to its row whatever order the
provider writes its output in (the order is not promised). A batch input's own custom_id stays
in the row's fields and is written to the merged output as before.

A result line is read into a `LineResult`: an answer (parsed by the operation, as an online
200 is), an error (typed as the online answer would be: a 400 is final, a 429 or 5xx is
transient), or "unexecuted" (the batch expired or was cancelled before the line ran: the row
is simply to do again, with no error of its own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import MalformedResponse, RequestError, ServerError
from ..journal import StoredRequest
from ..operations import Operation
from ..records import Completion
from ..transport import classify

PREFIX = "squall-"
UNEXECUTED = frozenset({"batch_expired", "batch_cancelled"})
"""Error codes of lines the provider never ran (the batch ended first)."""


def custom_id(index: int) -> str:
    """Return the custom_id squall gives row `index`'s line."""
    return f"{PREFIX}{index}"


def row_of(cid: object) -> int | None:
    """Return the row index a squall custom_id names, or None for any other."""
    if not isinstance(cid, str) or not cid.startswith(PREFIX):
        return None
    tail = cid[len(PREFIX) :]
    return int(tail) if tail.isdigit() else None


def line_bytes(spec: StoredRequest, kind: str, model: str) -> bytes:
    """Return the input line (with its newline) that asks for `spec` with `model`."""
    body = {"model": model, **spec.body}
    line = {"custom_id": custom_id(spec.index), "method": "POST", "url": kind, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class ChunkFile:
    """A batch input file being written: its rows, lines and bytes so far.

    Args:
        path: where the file is written (replaced if present).
        max_requests: the most lines it may hold.
        max_bytes: the most bytes it may hold (a single line over it still goes alone).
    """

    path: Path
    max_requests: int
    max_bytes: int
    rows: list[int]
    nbytes: int = 0
    _out: IO[bytes] | None = None

    @classmethod
    def create(cls, path: Path, *, max_requests: int, max_bytes: int) -> ChunkFile:
        """Open a new, empty chunk file at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        chunk = cls(path, max_requests, max_bytes, [])
        chunk._out = path.open("wb")
        return chunk

    def fits(self, line: bytes) -> bool:
        """Return whether `line` may still go in (the first line always does)."""
        if not self.rows:
            return True
        return len(self.rows) < self.max_requests and self.nbytes + len(line) <= self.max_bytes

    def add(self, index: int, line: bytes) -> None:
        """Write row `index`'s line."""
        assert self._out is not None, "ChunkFile.add after close"
        self._out.write(line)
        self.rows.append(index)
        self.nbytes += len(line)

    def close(self) -> None:
        """Flush and close the file (it is uploaded next)."""
        if self._out is not None:
            self._out.flush()
            self._out.close()
            self._out = None


def write_chunk(
    path: Path, specs: Iterable[StoredRequest], kind: str, model_of: Callable[[StoredRequest], str]
) -> tuple[list[int], int]:
    """Write the lines of `specs` (all of them) to `path`; return their rows and the bytes.

    For a chunk whose rows the journal already holds (its file is written again).
    """
    chunk = ChunkFile.create(path, max_requests=1 << 62, max_bytes=1 << 62)
    try:
        for spec in specs:
            chunk.add(spec.index, line_bytes(spec, kind, model_of(spec)))
    finally:
        chunk.close()
    return chunk.rows, chunk.nbytes


@dataclass(frozen=True, slots=True)
class LineResult:
    """One result line, read: the row it answers and what came of it.

    Exactly one of `completion` and `error` is set, or neither when `unexecuted`.
    """

    index: int
    completion: Completion | None = None
    error: RequestError | None = None
    unexecuted: bool = False


def _response(
    index: int, response: Mapping[str, object], op: Operation, keep_raw: bool, redact: _Redact
) -> LineResult:
    status = response.get("status_code")
    body = response.get("body")
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    if not isinstance(status, int):
        return LineResult(index, error=MalformedResponse("a batch result line has no status_code"))
    if status != 200:
        return LineResult(index, error=classify(status, raw, {}, redact))
    try:
        completion = op.parse(raw, keep_raw, redact)
    except RequestError as exc:
        return LineResult(index, error=exc)
    request_id = response.get("request_id")
    if completion.request_id is None and isinstance(request_id, str):
        completion.request_id = request_id
    return LineResult(index, completion=completion)


_Redact = Callable[[str], str]


def read_results(
    path: Path, op: Operation, *, keep_raw: bool, redact: _Redact
) -> Iterator[LineResult]:
    """Yield each result line of an output or error file that names a squall row.

    Lines that are not JSON, or name no squall row, are skipped (a provider's file holds
    only the lines of the batch's input, which squall wrote).
    """
    with path.open("rb") as f:
        for raw_line in f:
            if not raw_line.strip():
                continue
            try:
                data = json.loads(raw_line)
            except ValueError:
                continue
            if not isinstance(data, dict):
                continue
            index = row_of(data.get("custom_id"))
            if index is None:
                continue
            response = data.get("response")
            if isinstance(response, dict) and response.get("status_code") is not None:
                yield _response(index, response, op, keep_raw, redact)
                continue
            error = data.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            if code in UNEXECUTED:
                yield LineResult(index, unexecuted=True)
                continue
            message = error.get("message") if isinstance(error, dict) else None
            text = redact(f"batch line error {code or ''}: {message or 'no message'}")
            yield LineResult(index, error=ServerError(text))
