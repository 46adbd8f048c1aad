"""The passes of a run, and which way the data flows through them.

The input is read once, by `ingest`: each row is validated, built into its request and
fingerprinted, and the journal keeps the row's fields and its request beside its state. From
then on the journal is the only source: `todo` sends from it, `write_output` and
`output_rows` write the merged output from it. So an input that can be read only once
(standard input, a pipe, a stream) runs like a file, and the output can be written from a
journal alone, at any time (after a `kill -9`, say).

The one other pass over the input is `plan.dry_run`'s, which writes no journal to read from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError, JournalError
from .inputs import is_batch_line
from .journal import IngestReport, IngestRow, Journal, OutputRow
from .operations import CHAT, COMPLETIONS, Operation, operation
from .outputs import merge_fields, open_writer
from .plan import Plan
from .prompts import ROW_FINGERPRINT, row_fingerprinter
from .records import RequestSpec, Row


def ingest(plan: Plan, jr: Journal) -> IngestReport:
    """Read every input row into the journal, with its request; return what it found.

    Streams, in the journal's chunks. A known row is checked against its fingerprint (a
    changed input is named row by row); a new row is stored PENDING with its fields, its
    request body, its token estimate and the model and custom_id a batch line gives.

    Raises:
        InputError: a row cannot make a request (the file, line and field are named).
        InputChangedError: the input differs from what the journal holds.
    """
    fp = plan.fingerprint
    scheme = jr.check_settings(
        fp.digest, fp.settings, input_name=plan.source.name, row_fingerprint=ROW_FINGERPRINT
    )
    return jr.ingest(_ingest_rows(plan, row_fingerprinter(scheme)))


def _ingest_rows(
    plan: Plan, fingerprint: Callable[[Mapping[str, Any]], str]
) -> Iterator[IngestRow]:
    source, builder, batch = plan.source, plan.builder, plan.batch
    for row in source.rows():
        spec = builder.build(row, batch=batch)
        if plan.line_models and spec.model is None:
            raise InputError(
                'body has no "model" and no model is configured: add one to each line\'s '
                "body, or pass --model",
                file=source.name,
                line=spec.line,
                field="body.model",
            )
        # The row's content, not its request: a settings change is told apart and named.
        yield IngestRow(
            row.index,
            row.line,
            fingerprint(row.data),
            row.data,
            spec.body,
            spec.est_prompt_tokens,
            spec.model,
            spec.custom_id,
        )


def todo(jr: Journal, *, retry_failed: bool) -> Iterator[RequestSpec]:
    """Yield the requests of the rows still to do, from the journal (the input is not read).

    Raises:
        JournalError: a row to do was ingested without its request (by an older squall):
            rerun, and ingest stores it.
    """
    for r in jr.iter_todo_requests(retry_failed=retry_failed):
        yield RequestSpec(r.index, r.line, r.body, r.est_tokens or 0, r.custom_id, r.row_model)


def _rows(jr: Journal) -> Iterator[OutputRow]:
    for r in jr.iter_output():
        if r.data is None:
            raise JournalError(
                f"{jr.path}: row {r.index} was journaled by an older squall without its input "
                "fields, so the output cannot be written from the journal alone: run the same "
                "command again (the input is read once more and the fields stored)"
            )
        yield r


def write_output(
    journal: Path, output: Path, *, batch: bool, operation: Operation | None = None
) -> int:
    """Write the merged output from the journal alone, in input order; return rows written.

    Rows not answered yet are written with their fields and empty answer columns, those of
    `operation` (default: the one the journal's settings name, see `journal_operation`).

    Raises:
        OutputError: the file cannot be written; JournalError: see `_rows`.
    """
    with Journal.open(journal, read_only=True) as jr:
        op = operation or journal_operation(jr)
        with open_writer(output, batch=batch, operation=op) as w:
            for r in _rows(jr):
                w.write(Row(r.index, 0, r.data or {}), r.result)
            return w.rows_written


def journal_operation(jr: Journal) -> Operation:
    """Return the operation a journal's rows were sent as, from its recorded settings.

    Chat when the settings name no other (journals made before other kinds name none).
    """
    try:
        settings = json.loads(jr.get_meta("settings") or "{}")
    except ValueError:
        settings = {}
    if not isinstance(settings, dict):
        return CHAT
    try:
        op = operation(str(settings.get("api") or CHAT.name))
    except ConfigError:
        return CHAT
    params = settings.get("params")
    if op.name == COMPLETIONS.name and isinstance(params, dict):
        op = COMPLETIONS.with_params(params)
    return op


def output_rows(journal: Path, operation: Operation | None = None) -> Iterator[dict[str, Any]]:
    """Yield the merged output rows from the journal, in input order.

    Their answer columns are `operation`'s (default: the journal's, see `journal_operation`).
    """
    with Journal.open(journal, read_only=True) as jr:
        op = operation or journal_operation(jr)
        for r in _rows(jr):
            yield merge_fields(r.data or {}, r.result, op)


def export(journal: Path, output: Path) -> tuple[int, int]:
    """Write the output from a journal alone, sending nothing; return (rows, rows done).

    For what was paid for after a crash or a stop: rows not answered yet are written with
    empty answer columns. The journal may be in use by a live run (it is read, not locked).
    The format is the output's extension; OpenAI batch lines (the same test as the input's)
    are written as Batch API output lines.

    Raises:
        JournalError: no readable journal there; OutputError: the file cannot be written.
    """
    with Journal.open(journal, read_only=True) as jr:
        first = next(jr.iter_output(), None)
        done = jr.statistics().done
    batch = first is not None and first.data is not None and is_batch_line(first.data)
    return write_output(journal, output, batch=batch), done
