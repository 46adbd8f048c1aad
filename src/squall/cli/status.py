"""`squall status JOURNAL`: the account of a finished, running or interrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..account import status_summary
from ..errors import SquallError
from . import help as h
from .console import export_hint, fail, out, summary_json


def status_cmd(
    journal: Annotated[Path, typer.Argument(help="A journal file (OUTPUT.squall.sqlite).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the account as JSON.")] = False,
) -> None:
    """Print the account of a finished, running or interrupted run from its journal."""
    try:
        summary = status_summary(journal)
    except SquallError as e:
        raise fail(e) from None
    if as_json:
        out.print_json(data=summary_json(summary))
    else:
        out.print(summary)
        if summary.status == "interrupted":
            out.print(export_hint(str(journal)), soft_wrap=True)
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    """Add `status` to `app`."""
    app.command("status", cls=h.Command)(status_cmd)
