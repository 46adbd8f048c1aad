"""`squall run`: options -> settings -> `squall.api.run` -> the account, and the exit code."""

from __future__ import annotations

import sys
from typing import Any, cast

import typer

from ..errors import ConfigError, SquallError
from ..progress import Mode
from . import help as h
from .console import fail, print_run_end


def run_cmd(
    input: h.Input,
    output: h.Output,
    config: h.ConfigFile = None,
    journal: h.JournalFile = None,
    base_url: h.BaseUrl = None,
    model: h.Model = None,
    api: h.ApiKind = None,
    key_env: h.KeyEnv = None,
    rpm: h.Rpm = None,
    tpm: h.Tpm = None,
    concurrency: h.Concurrency = None,
    template: h.Template = None,
    system: h.System = None,
    max_tokens: h.MaxTokens = None,
    temperature: h.Temperature = None,
    max_cost: h.MaxCost = None,
    restart: h.Restart = False,
    retry_failed: h.RetryFailed = False,
    dry_run: h.DryRun = False,
    progress: h.ProgressMode = None,
    input_format: h.InputFormat = None,
    batch_api: h.BatchApi = False,
    batch_fallback: h.BatchFallback = None,
    embeddings_max_inputs: h.EmbeddingsMaxInputs = None,
    embeddings_max_tokens: h.EmbeddingsMaxTokens = None,
    ray: h.Ray = None,
    workers: h.Workers = None,
) -> None:
    """Run every row of INPUT through the endpoints; write OUTPUT in input order.

    Rerun the same command to resume: nothing already answered is requested again.
    """
    from ..api import run as api_run

    if progress is not None and progress not in h.PROGRESS_MODES:
        raise fail(ConfigError(f"--progress {progress!r}: use auto, rich, plain or off"))
    if api is not None and api not in h.APIS:
        raise fail(ConfigError(f"--api {api!r}: use {', '.join(h.APIS)}"))
    if batch_fallback is not None and batch_fallback not in h.BATCH_FALLBACKS:
        raise fail(ConfigError(f"--batch-fallback {batch_fallback!r}: use none or online"))
    settings = _given(
        base_url=base_url,
        model=model,
        api=api,
        key_env=key_env,
        rpm=rpm,
        tpm=tpm,
        concurrency=concurrency,
        template=template,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        max_cost=max_cost,
        batch_api=batch_api or None,
        batch_fallback=batch_fallback,
        embeddings_max_inputs=embeddings_max_inputs,
        embeddings_max_tokens=embeddings_max_tokens,
        ray=ray,
        workers=workers,
    )
    try:
        result = api_run(
            str(input),
            output=output,
            config=config,
            journal=journal,
            restart=restart,
            retry_failed=retry_failed,
            dry_run=dry_run,
            progress=cast(Mode, progress),  # checked against PROGRESS_MODES above
            input_format=input_format,
            **settings,
        )
    except SquallError as e:
        raise fail(e) from None
    print_run_end(result.summary, sys.argv)
    raise typer.Exit(result.exit_code)


def _given(**settings: Any) -> dict[str, Any]:
    """Return the settings given on the command line (the config's apply to the others)."""
    return {k: v for k, v in settings.items() if v is not None}


def register(app: typer.Typer) -> None:
    """Add `run` to `app`."""
    app.command("run", cls=h.Command)(run_cmd)
