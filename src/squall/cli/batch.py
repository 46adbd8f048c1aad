"""`squall batch cancel JOURNAL -c CONFIG`: cancel the live Batch API batches of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import SquallError
from . import help as h
from .console import err, fail

batch_app = typer.Typer(
    help="The provider's Batch API batches of a run (made with --batch-api).",
    no_args_is_help=True,
)


@batch_app.command("cancel", cls=h.Command)
def cancel_cmd(
    journal: Annotated[Path, typer.Argument(help="A journal file (OUTPUT.squall.sqlite).")],
    config: h.ConfigFile = None,
) -> None:
    """Cancel every live batch a run made (the config must hold the keys they were made with).

    The next `squall run` of the same command collects what each batch answered before it
    was cancelled and submits the rest in a new batch (or, with --batch-fallback online,
    sends it online).
    """
    from ..api import cancel_batches

    try:
        lines = cancel_batches(journal, config=config)
    except SquallError as e:
        raise fail(e) from None
    for line in lines or ["no live batches in this journal: nothing to cancel"]:
        err.print(escape(line))
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    """Add `batch` (with `cancel`) to `app`."""
    app.add_typer(batch_app, name="batch")
