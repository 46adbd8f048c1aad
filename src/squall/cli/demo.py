"""`squall demo`: a practice batch against a local SIMULATED provider."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import SquallError
from . import help as h
from .console import fail


def demo_cmd(
    rows: Annotated[int, typer.Option("-n", "--rows", help="Arithmetic prompts to send.")] = 300,
    workdir: Annotated[Path, typer.Option("--dir", help="Where the demo writes its files.")] = Path(
        "squall-demo"
    ),
    restart: Annotated[bool, typer.Option("--restart", help="Start the demo over.")] = False,
) -> None:
    """Run a practice batch against a local SIMULATED provider: 3 keys, 429s and faults.

    Press Ctrl-C midway, then run it again to see it resume.
    """
    from ..demo import run_demo

    try:
        code = run_demo(rows=rows, workdir=workdir, restart=restart)
    except SquallError as e:
        raise fail(e) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add `demo` to `app`."""
    app.command("demo", cls=h.Command)(demo_cmd)
