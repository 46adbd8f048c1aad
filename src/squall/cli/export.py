"""`squall export JOURNAL -o FILE`: write the output from a journal alone, sending nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import SquallError
from ..passes import export
from . import help as h
from .console import err, fail


def export_cmd(
    journal: Annotated[Path, typer.Argument(help="A journal file (OUTPUT.squall.sqlite).")],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="The file to write (.jsonl, .csv, .tsv, .parquet).",
            dir_okay=False,
        ),
    ],
) -> None:
    """Write every row of a journal beside its answer, in input order, sending nothing."""
    try:
        rows, done = export(journal, output)
    except SquallError as e:
        raise fail(e) from None
    err.print(escape(f"wrote {rows} rows ({done} answered, {rows - done} not yet) to {output}"))
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    """Add `export` to `app`."""
    app.command("export", cls=h.Command, help=_HELP)(export_cmd)


_HELP = (
    "Write every row of a journal beside its answer, in input order, sending nothing.\n\n"
    "For what was paid for after a kill or a stop: rows not answered yet are written with "
    "empty answer columns. Works while a run is using the journal."
)
