"""The public entry points: `run()` (scripts and Jupyter alike) and `arun()` (inside a loop).

This is the façade only. A run is planned (`plan.py`: settings, input, requests, journal
path), then run (`runner.py`: one session over the journal, through the engine), in passes
whose data flows one way (`passes.py`: the input is read once into the journal; sending and
the output read from the journal). The account is `account.py`'s.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from .account import Summary
from .account import summarize as summarize
from .batchapi import cancel_batches as _cancel_batches
from .clock import Clock, MonotonicClock
from .config import Api, RunConfig
from .engine import Engine
from .journal import Journal
from .passes import output_rows
from .passes import write_output as write_output
from .plan import default_journal as default_journal
from .plan import dry_run as _dry_run
from .plan import make_plan
from .plan import resolve_config as resolve_config
from .progress import Mode, to_html
from .redact import Redactor
from .runner import Runner, batch_keys
from .tokens import estimate_tokens  # noqa: F401  # re-exported for users estimating by hand

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class RunResult:
    """What a run gives back: its account, and where its output and journal are."""

    summary: Summary
    output: Path | None
    journal: Path

    @property
    def exit_code(self) -> int:
        """0 every row done, 1 some failed or left pending, 130 interrupted."""
        if self.summary.status == "interrupted":
            return 130
        if self.summary.status == "dry-run":
            return 0
        return 0 if self.summary.complete else 1

    def rows(self) -> Iterator[dict[str, Any]]:
        """Yield the merged output rows in input order: input fields plus the answer columns.

        Read from the journal alone, so they are there whether or not an output file was
        asked for (a dry run has none).
        """
        if self.summary.status == "dry-run":
            return iter(())
        return output_rows(self.journal)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"RunResult({s.status}: {s.done}/{s.total} done, {s.failed} failed, "
            f"output={str(self.output) if self.output else None!r}, journal={str(self.journal)!r})"
        )

    def _repr_html_(self) -> str:
        """The account, as a notebook shows a cell's value."""
        return to_html(self.summary)

    def to_pandas(self) -> Any:
        """Return the merged output as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            from .errors import MissingExtraError

            raise MissingExtraError("RunResult.to_pandas()", "pandas", "pandas") from None
        return pd.DataFrame(list(self.rows()))


_SETTINGS = (
    "model",
    "api",
    "template",
    "system",
    "max_tokens",
    "temperature",
    "params",
    "max_cost",
    "base_url",
    "key_env",
    "rpm",
    "tpm",
    "concurrency",
    "batch_api",
    "batch_fallback",
    "embeddings_max_inputs",
    "embeddings_max_tokens",
    "ray",
    "workers",
)
"""`arun`'s keyword settings that `resolve_config` takes, by their RunConfig names."""


async def arun(
    data: Any,
    *,
    output: str | Path | None = None,
    config: str | Path | RunConfig | None = None,
    journal: str | Path | None = None,
    restart: bool = False,
    retry_failed: bool = False,
    dry_run: bool = False,
    progress: Mode | None = None,
    input_format: str | None = None,
    model: str | None = None,
    api: Api | None = None,
    template: str | None = None,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    params: Mapping[str, Any] | None = None,
    max_cost: float | None = None,
    base_url: str | None = None,
    key_env: Sequence[str] | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    concurrency: int | None = None,
    batch_api: bool | None = None,
    batch_fallback: Literal["none", "online"] | None = None,
    embeddings_max_inputs: int | None = None,
    embeddings_max_tokens: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
    clock: Clock | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunResult:
    """Run every row of `data` through the configured endpoints; return the account.

    Args:
        data: a file path (.jsonl, .csv, .parquet, OpenAI batch lines; "-" for standard
            input), a DataFrame, a list of prompt strings or of dicts.
        output: where to write the merged output (format by extension), in input order.
        config: a TOML file, a RunConfig, or None (environment and the settings below only).
        journal: the journal file (default: OUTPUT.squall.sqlite, else under .squall/).
        restart: discard the journal first and start fresh.
        retry_failed: send rows that failed for good again (by default only rows whose
            retryable errors ran out of tries are sent again).
        dry_run: validate the input and estimate tokens and cost; send nothing.
        progress: "auto", "rich", "plain" or "off".
        input_format: the input's format when its name does not say ("jsonl", "csv", ...).
        model: the model to ask for (over the config's; validated like every setting).
        api: the kind of request: "chat" (the default), "completions" (the row's prompt
            sent as `prompt`, `choices[0].text` read) or "embeddings" (rows packed many
            to a request by the config's `embeddings_max_inputs` and
            `embeddings_max_tokens`, each vector in its row's `embedding` column). OpenAI
            batch lines: their `url` decides.
        template: a `str.format` template filled from each row's fields, as the prompt.
        system: a system message put before every prompt.
        max_tokens: the longest answer to ask for.
        temperature: the sampling temperature.
        params: more request parameters, passed as they are (`{"top_p": 0.9}`).
        max_cost: stop sending before the spend (USD, from the config's prices) passes this.
        base_url: the one endpoint's URL, given by flag (with a config file or none; a
            RunConfig sets its own endpoints).
        key_env: the names of the environment variables holding that endpoint's keys.
        rpm: requests per minute each of its keys may send (`math.inf`: no limit).
        tpm: tokens per minute each of its keys may use.
        concurrency: requests each of its keys may have in flight.
        batch_api: send through the provider's Batch API at its batch price (OpenAI: half).
        batch_fallback: "online": rows of batches that ended unfinished go online at once.
        embeddings_max_inputs: embeddings: the most rows a request packs.
        embeddings_max_tokens: embeddings: the most estimated tokens a request packs.
        ray: run on Ray: "local", "auto" or a cluster address (limits hold cluster-wide).
        workers: how many Ray workers (default: the cluster's CPUs, at most 8).
        clock: the clock the run paces by (tests give a fake one).
        on_engine: called with the engine once it is built (to stop it from outside).

    Raises:
        ConfigError, InputError, InputChangedError, JournalError, OutputError: nothing was
            sent that is not journaled; the message says what to do.
    """
    # The keyword settings, by name: each one `resolve_config` knows, None for not given.
    given = locals()
    settings = {name: given[name] for name in _SETTINGS if given[name] is not None}
    if params is not None:
        settings["params"] = dict(params)
    if key_env is not None:
        settings["key_env"] = list(key_env)
    cfg = resolve_config(config, settings)
    plan = make_plan(
        data, cfg=cfg, output=output, journal=journal, input_format=input_format, dry_run=dry_run
    )
    if dry_run:
        return RunResult(summary=_dry_run(plan), output=None, journal=plan.journal)
    runner = Runner(
        plan,
        clock=clock or MonotonicClock(),
        progress=progress,
        retry_failed=retry_failed,
        on_engine=on_engine,
    )
    summary = await runner.run(restart=restart)
    return RunResult(summary=summary, output=plan.output, journal=plan.journal)


def _in_any_loop(coro_fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Make `coro_fn` callable from plain code and from inside a running loop alike."""

    @functools.wraps(coro_fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_awaited(coro_fn(*args, **kwargs)))
        return _in_worker_thread(coro_fn, args, kwargs)

    return call


async def _awaited(aw: Awaitable[T]) -> T:
    return await aw


def _in_worker_thread(
    coro_fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    """Run on a fresh loop in a worker thread and wait (squall never nests or patches loops).

    Jupyter's "interrupt kernel" raises KeyboardInterrupt here: the run is asked to stop
    sending, lands what is in flight, and returns its account.
    """
    box: dict[str, Any] = {}
    engines: list[tuple[Engine, asyncio.AbstractEventLoop]] = []
    given = kwargs.get("on_engine")

    def keep(engine: Engine) -> None:
        engines.append((engine, asyncio.get_running_loop()))
        if given is not None:
            given(engine)

    def work() -> None:
        try:
            box["result"] = asyncio.run(_awaited(coro_fn(*args, **{**kwargs, "on_engine": keep})))
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e

    thread = threading.Thread(target=work, name="squall-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        if engines:
            engine, loop = engines[0]
            loop.call_soon_threadsafe(engine.request_stop, "interrupted")
        thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


async def acancel_batches(
    journal: str | Path, *, config: str | Path | RunConfig | None = None
) -> list[str]:
    """Cancel the live Batch API batches a run made; return a line per batch.

    `config` must hold the keys the batches were made with. The next run over the journal
    collects what each batch answered before its cancellation and leaves the rest to do.

    Raises:
        ConfigError: the config is bad; JournalError: no journal there, or a run is using
            it; BatchAPIError: a provider refused a call (the message says which).
    """
    cfg = resolve_config(config, {})
    models = {ep.name: ep.model or cfg.model or "" for ep in cfg.endpoints}
    redactor = Redactor([k.key.reveal() for ep in cfg.endpoints for k in ep.keys])
    with Journal.open(journal) as jr:
        return await _cancel_batches(jr, batch_keys(cfg, models), redactor)


cancel_batches = _in_any_loop(acancel_batches)
cancel_batches.__doc__ = acancel_batches.__doc__

run = _in_any_loop(arun)
run.__doc__ = """Run `data` to the end and return the account; the arguments are `arun`'s.

Works in a plain script and in a Jupyter cell alike: inside a running event loop it runs on a
fresh loop in a worker thread and waits for it (squall never nests or patches loops).
"""
