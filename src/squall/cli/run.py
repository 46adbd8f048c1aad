"""`squall run`, `squall status`, `squall demo` and `squall simulate`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from ..errors import ConfigError, InputError, JournalError, OutputError, SquallError

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

USAGE_ERRORS = (ConfigError, InputError, JournalError, OutputError)


def fail(error: SquallError) -> typer.Exit:
    """Print `error` the way a person should read it and return the exit to raise."""
    err.print(f"[bold red]error:[/] {error}", soft_wrap=True)
    return typer.Exit(2 if isinstance(error, USAGE_ERRORS) else 1)


def _resume_hint(argv: list[str]) -> str:
    return "squall " + " ".join(a if " " not in a else repr(a) for a in argv[1:])


def register(app: typer.Typer) -> None:
    """Add `run`, `status`, `demo` and `simulate` to `app`."""

    @app.command("run")
    def run_cmd(
        input: Annotated[Path, typer.Argument(help="Prompts: .jsonl, .csv, .parquet or OpenAI batch lines.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Merged output (.jsonl, .csv, .parquet).")],
        config: Annotated[Optional[Path], typer.Option("-c", "--config", help="TOML config file.")] = None,
        journal: Annotated[Optional[Path], typer.Option("--journal", help="Journal file (default OUTPUT.squall.sqlite).")] = None,
        base_url: Annotated[Optional[str], typer.Option("--base-url", help="One endpoint's base URL (replaces the config's endpoints).")] = None,
        model: Annotated[Optional[str], typer.Option("--model", help="Model name to send.")] = None,
        key_env: Annotated[Optional[list[str]], typer.Option("--key-env", help="Environment variable holding a key (repeat for several keys).")] = None,
        rpm: Annotated[Optional[float], typer.Option("--rpm", help="Requests per minute per key (inf: unlimited).")] = None,
        tpm: Annotated[Optional[float], typer.Option("--tpm", help="Tokens per minute per key.")] = None,
        concurrency: Annotated[Optional[int], typer.Option("--concurrency", help="Requests in flight per key.")] = None,
        template: Annotated[Optional[str], typer.Option("--template", help="Prompt template over the row's columns, e.g. '计算 {expression} 的结果'.")] = None,
        system: Annotated[Optional[str], typer.Option("--system", help="System prompt.")] = None,
        max_tokens: Annotated[Optional[int], typer.Option("--max-tokens")] = None,
        temperature: Annotated[Optional[float], typer.Option("--temperature")] = None,
        max_cost: Annotated[Optional[float], typer.Option("--max-cost", help="Stop sending before the spend (USD, from [prices]) would pass this.")] = None,
        restart: Annotated[bool, typer.Option("--restart", help="Discard the journal and start fresh.")] = False,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Send rows that failed for good again.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the input, estimate tokens and cost; send nothing.")] = False,
        progress: Annotated[Optional[str], typer.Option("--progress", help="auto, rich, plain or off.")] = None,
        input_format: Annotated[Optional[str], typer.Option("--format", help="Input format when the extension does not say: jsonl, csv, parquet.")] = None,
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
        if summary.status == "interrupted":
            err.print(f"[yellow]interrupted.[/] Resume with: {_resume_hint(sys.argv)}")
        elif summary.status == "stopped":
            err.print(f"[yellow]stopped: {summary.reason}[/]\nResume with: {_resume_hint(sys.argv)}")
        elif summary.failed:
            err.print(
                f"{summary.failed} row(s) failed for good (reasons above, `error` column in the "
                "output); rerun with --retry-failed to send them again"
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
                models = json.loads(jr.get_meta("models") or "{}")
                prices = {
                    k: Price(**v) for k, v in json.loads(jr.get_meta("prices") or "{}").items()
                }
        except SquallError as e:
            raise fail(e) from None
        last = stats.sessions[-1] if stats.sessions else None
        status = "unknown"
        reason = None
        if last is not None:
            if last.outcome is None:
                status = "interrupted"
                reason = "running now, or its process died (kill -9, crash)"
            else:
                status = last.outcome
        summary: Summary = summarize(
            stats, prices, models, status=status, reason=reason, journal=journal
        )
        if as_json:
            out.print_json(
                data={
                    "status": summary.status,
                    "total": summary.total,
                    "done": summary.done,
                    "failed": summary.failed,
                    "pending": summary.pending,
                    "failures": {f.reason: {"count": f.count, "rows": list(f.example_rows)} for f in summary.failures},
                    "requests_sent": summary.requests_sent,
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
        config: Annotated[Optional[str], typer.Option("--config", help="Simulator config as JSON (or a path).")] = None,
    ) -> None:
        """Start the provider SIMULATOR (not a model: it echoes and does arithmetic) on 127.0.0.1."""
        from ..simulator import main as sim_main

        args = ["--port", str(port)]
        if config:
            args += ["--config", config]
        sim_main(args)

    @app.command("demo")
    def demo_cmd(
        rows: Annotated[int, typer.Option("-n", "--rows", help="Arithmetic prompts to send.")] = 300,
        workdir: Annotated[Path, typer.Option("--dir", help="Where the demo writes its files.")] = Path("squall-demo"),
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


