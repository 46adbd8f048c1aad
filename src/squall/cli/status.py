"""`squall status JOURNAL`: the account of a finished, running or interrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..account import status_summary
from ..errors import SquallError
from ..journal import BatchRecord, Journal
from . import help as h
from .console import export_hint, fail, out, summary_json


def status_cmd(
    journal: Annotated[Path, typer.Argument(help="A journal file (OUTPUT.squall.sqlite).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the account as JSON.")] = False,
) -> None:
    """Print the account of a finished, running or interrupted run from its journal."""
    try:
        summary = status_summary(journal)
        with Journal.open(journal, read_only=True) as jr:
            batches = jr.batches.records()
    except SquallError as e:
        raise fail(e) from None
    if as_json:
        data = summary_json(summary)
        data["batches"] = [_batch_json(b) for b in batches]
        out.print_json(data=data)
    else:
        out.print(summary)
        if batches:
            out.print(batch_table(batches))
        if summary.status == "interrupted":
            out.print(export_hint(str(journal)), soft_wrap=True)
    raise typer.Exit(0)


def _batch_json(b: BatchRecord) -> dict[str, Any]:
    return {
        "chunk": b.chunk,
        "endpoint": b.endpoint,
        "key": b.label,
        "rows": b.rows,
        "status": b.status,
        "live": b.live,
        "completed": b.completed,
        "failed": b.failed,
        "batch_id": b.batch_id,
        "input_file_id": b.file_id,
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "errors": list(b.errors),
    }


def batch_table(batches: list[BatchRecord]) -> Table:
    """Return the table of a journal's Batch API batches: status, counts and ids."""
    table = Table(title="Batch API batches", box=None, padding=(0, 1), header_style="dim")
    for col in ("batch", "key", "status", "rows", "done", "failed", "batch id", "file id"):
        # Ids fold rather than end in "…": a user copies them into the provider's console.
        table.add_column(
            col,
            justify="right" if col in ("rows", "done", "failed") else "left",
            overflow="fold" if col.endswith(" id") else "ellipsis",
        )
    for b in batches:
        status = b.status + ("" if b.live else ", collected")
        if b.errors:
            status += f": {b.errors[0]}"
        table.add_row(
            str(b.chunk),
            escape(b.label),
            escape(status),
            str(b.rows),
            str(b.completed),
            str(b.failed),
            b.batch_id or "-",
            b.file_id or "-",
        )
    return table


def register(app: typer.Typer) -> None:
    """Add `status` to `app`."""
    app.command("status", cls=h.Command)(status_cmd)
