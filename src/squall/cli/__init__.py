"""The `squall` command: one typer app; each sub-command lives in a module of this package.

Exit codes: 0 every row done; 1 some rows failed for good (recorded, with reasons) or the
run stopped early but resumable; 2 bad usage, config or input; 130 after Ctrl-C.
"""

from __future__ import annotations

import typer

from .help import Group

app = typer.Typer(
    cls=Group,
    name="squall",
    help="Run batches of prompts through OpenAI-compatible endpoints: fast, within limits, "
    "losing nothing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Each module adds its commands to `app`; a module whose extras are missing still
    # registers, and says what to install when its command runs.
    from . import batch, demo, export, run, serve, simulate, status
    from . import eval as eval_

    run.register(app)
    status.register(app)
    export.register(app)
    batch.register(app)
    simulate.register(app)
    demo.register(app)
    serve.register(app)
    eval_.register(app)


def main() -> None:
    """Entry point of the `squall` console script."""
    _register()
    app()
