"""What every command prints with: the two consoles, errors, and the end of a run's account."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ..account import Summary, key_json
from ..errors import ConfigError, InputError, JournalError, OutputError, SquallError

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

USAGE_ERRORS = (ConfigError, InputError, JournalError, OutputError)


def fail(error: SquallError) -> typer.Exit:
    """Print `error` the way a person should read it and return the exit to raise."""
    # Messages quote config like `[[endpoints]]` and `[prices]`: print them, not as markup.
    err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(2 if isinstance(error, USAGE_ERRORS) else 1)


def resume_hint(argv: list[str]) -> str:
    """Return the command line that reruns (so resumes) the command `argv` ran."""
    return "squall " + " ".join(a if " " not in a else repr(a) for a in argv[1:])


def export_hint(journal: str) -> str:
    """Return the line that says how to write what was paid for, sending nothing."""
    return escape(f"What was answered so far, without sending: squall export {journal} -o FILE")


def print_run_end(summary: Summary, argv: list[str]) -> None:
    """Print a run's account to stderr, then how to resume it or what its failures mean."""
    err.print(summary)
    hint = escape(resume_hint(argv))
    if summary.status == "interrupted":
        err.print(f"[yellow]interrupted.[/] Resume with: {hint}", soft_wrap=True)
        if summary.journal:
            err.print(export_hint(summary.journal), soft_wrap=True)
    elif summary.status == "stopped":
        err.print(
            f"[yellow]stopped: {escape(summary.reason or '')}[/]\nResume with: {hint}",
            soft_wrap=True,
        )
    elif summary.failed:
        err.print(
            f"{summary.failed} row(s) failed (reasons above, `error` column in the "
            "output): rerunning sends those that ran out of retries again; "
            "--retry-failed also sends those refused for good (4xx)",
            soft_wrap=True,
        )


def summary_json(summary: Summary) -> dict[str, Any]:
    """Return the account as `squall status --json` prints it."""
    return {
        "status": summary.status,
        "total": summary.total,
        "done": summary.done,
        "failed": summary.failed,
        "pending": summary.pending,
        "failures": {
            f.reason: {"count": f.count, "rows": list(f.example_rows)} for f in summary.failures
        },
        "requests_sent": summary.requests_sent,
        "retries": summary.retries,
        "in_flight": summary.in_flight,
        "in_flight_at_crash": summary.in_flight_at_crash,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "cost": summary.cost,
        "wall_s": summary.wall_s,
        "keys": [key_json(k) for k in summary.keys],
    }
