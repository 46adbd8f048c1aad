"""`squall run`, `squall status`, `squall demo` and `squall simulate`."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import ConfigError, InputError, JournalError, OutputError, SquallError

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

USAGE_ERRORS = (ConfigError, InputError, JournalError, OutputError)


def fail(error: SquallError) -> typer.Exit:
    """Print `error` the way a person should read it and return the exit to raise."""
    # Messages quote config like `[[endpoints]]` and `[prices]`: print them, not as markup.
    err.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(2 if isinstance(error, USAGE_ERRORS) else 1)


def _resume_hint(argv: list[str]) -> str:
    return "squall " + " ".join(a if " " not in a else repr(a) for a in argv[1:])


def register(app: typer.Typer) -> None:
    """Add `run`, `status`, `demo` and `simulate` to `app`."""

    @app.command("run")
    def run_cmd(
        input: Annotated[
            Path, typer.Argument(help="Prompts: .jsonl, .csv, .parquet or OpenAI batch lines.")
        ],
        output: Annotated[
            Path, typer.Option("-o", "--output", help="Merged output (.jsonl, .csv, .parquet).")
        ],
        config: Annotated[
            Path | None, typer.Option("-c", "--config", help="TOML config file.")
        ] = None,
        journal: Annotated[
            Path | None,
            typer.Option("--journal", help="Journal file (default OUTPUT.squall.sqlite)."),
        ] = None,
        base_url: Annotated[
            str | None,
            typer.Option(
                "--base-url", help="One endpoint's base URL (replaces the config's endpoints)."
            ),
        ] = None,
        model: Annotated[str | None, typer.Option("--model", help="Model name to send.")] = None,
        key_env: Annotated[
            list[str] | None,
            typer.Option(
                "--key-env", help="Environment variable holding a key (repeat for several keys)."
            ),
        ] = None,
        rpm: Annotated[
            float | None,
            typer.Option("--rpm", help="Requests per minute per key (inf: unlimited)."),
        ] = None,
        tpm: Annotated[
            float | None, typer.Option("--tpm", help="Tokens per minute per key.")
        ] = None,
        concurrency: Annotated[
            int | None, typer.Option("--concurrency", help="Requests in flight per key.")
        ] = None,
        template: Annotated[
            str | None,
            typer.Option(
                "--template",
                help="Prompt template over the row's columns, e.g. '计算 {expression} 的结果'.",
            ),
        ] = None,
        system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
        max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
        temperature: Annotated[float | None, typer.Option("--temperature")] = None,
        max_cost: Annotated[
            float | None,
            typer.Option(
                "--max-cost",
                help="Stop sending before the spend (USD, from [prices]) would pass this.",
            ),
        ] = None,
        restart: Annotated[
            bool, typer.Option("--restart", help="Discard the journal and start fresh.")
        ] = False,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="Send rows that failed for good again.")
        ] = False,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run", help="Validate the input, estimate tokens and cost; send nothing."
            ),
        ] = False,
        progress: Annotated[
            str | None, typer.Option("--progress", help="auto, rich, plain or off.")
        ] = None,
        input_format: Annotated[
            str | None,
            typer.Option(
                "--format",
                help="Input format when the extension does not say: jsonl, csv, parquet.",
            ),
        ] = None,
    ) -> None:
        """Run every row of INPUT through the endpoints; write OUTPUT in input order.

        Rerun the same command to resume: nothing already answered is requested again.
        """
        from ..api import run as api_run

        settings: dict[str, Any] = {
            "base_url": base_url,
            "model": model,
            "key_env": key_env,
            "rpm": rpm,
            "tpm": tpm,
            "concurrency": concurrency,
            "template": template,
            "system": system,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "max_cost": max_cost,
        }
        if progress is not None and progress not in ("auto", "rich", "plain", "off"):
            raise fail(ConfigError(f"--progress {progress!r}: use auto, rich, plain or off"))
        try:
            result = api_run(
                str(input),
                output=output,
                config=config,
                journal=journal,
                restart=restart,
                retry_failed=retry_failed,
                dry_run=dry_run,
                progress=progress,
                input_format=input_format,
                **{k: v for k, v in settings.items() if v is not None},
            )
        except SquallError as e:
            raise fail(e) from None
        summary = result.summary
        err.print(summary)
        hint = escape(_resume_hint(sys.argv))
        if summary.status == "interrupted":
            err.print(f"[yellow]interrupted.[/] Resume with: {hint}", soft_wrap=True)
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
        raise typer.Exit(result.exit_code)

    @app.command("status")
    def status_cmd(
        journal: Annotated[Path, typer.Argument(help="A journal file (OUTPUT.squall.sqlite).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the account as JSON.")] = False,
    ) -> None:
        """Print the account of a finished, running or interrupted run from its journal."""
        from ..account import Summary
        from ..api import summarize
        from ..config import Price
        from ..journal import Journal

        try:
            with Journal.open(journal, read_only=True) as jr:
                stats = jr.statistics()
                live = jr.in_use_elsewhere()
                models = json.loads(jr.get_meta("models") or "{}")
                stop_reason = jr.get_meta("last_stop_reason") or None
                prices = {
                    k: Price(**v) for k, v in json.loads(jr.get_meta("prices") or "{}").items()
                }
        except SquallError as e:
            raise fail(e) from None
        last = stats.sessions[-1] if stats.sessions else None
        status = "unknown"
        reason = None
        if last is not None:
            if last.outcome is None and live:
                status = "running"
                reason = f"pid {last.pid}; {stats.sent} request(s) in flight now"
            elif last.outcome is None:
                status = "interrupted"
                reason = (
                    f"its process died (kill -9, crash) with {stats.sent} request(s) in flight: "
                    "they may have been billed, and are sent again on resume"
                )
            else:
                status = last.outcome
                if status != "completed":
                    reason = stop_reason
        summary: Summary = summarize(
            stats, prices, models, status=status, reason=reason, journal=journal
        )
        if live:  # what is in flight now is not what a crash left behind
            summary = dataclasses.replace(summary, in_flight_at_crash=0)
        if as_json:
            out.print_json(
                data={
                    "status": summary.status,
                    "total": summary.total,
                    "done": summary.done,
                    "failed": summary.failed,
                    "pending": summary.pending,
                    "failures": {
                        f.reason: {"count": f.count, "rows": list(f.example_rows)}
                        for f in summary.failures
                    },
                    "requests_sent": summary.requests_sent,
                    "in_flight": stats.sent,
                    "in_flight_at_crash": summary.in_flight_at_crash,
                    "prompt_tokens": summary.prompt_tokens,
                    "completion_tokens": summary.completion_tokens,
                    "cost": summary.cost,
                    "wall_s": summary.wall_s,
                }
            )
        else:
            out.print(summary)
        raise typer.Exit(0)

    @app.command("simulate")
    def simulate_cmd(
        port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8000,
        config: Annotated[
            str | None, typer.Option("--config", help="Simulator config as JSON (or a path).")
        ] = None,
    ) -> None:
        """Start the provider SIMULATOR (not a model: it echoes, does arithmetic) on 127.0.0.1."""
        from ..simulator import main as sim_main

        args = ["--port", str(port)]
        if config:
            args += ["--config", config]
        sim_main(args)

    @app.command("demo")
    def demo_cmd(
        rows: Annotated[
            int, typer.Option("-n", "--rows", help="Arithmetic prompts to send.")
        ] = 300,
        workdir: Annotated[
            Path, typer.Option("--dir", help="Where the demo writes its files.")
        ] = Path("squall-demo"),
        restart: Annotated[bool, typer.Option("--restart", help="Start the demo over.")] = False,
    ) -> None:
        """Run a practice batch against a local SIMULATED provider: 3 keys of uneven limits,
        429s and faults. Press Ctrl-C midway, then run it again to see it resume."""
        from ..demo import run_demo

        try:
            code = run_demo(rows=rows, workdir=workdir, restart=restart)
        except SquallError as e:
            raise fail(e) from None
        raise typer.Exit(code)
