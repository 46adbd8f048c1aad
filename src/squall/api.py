"""The public entry points: `run()` (scripts and Jupyter alike) and `arun()` (inside a loop).

This is where the parts are wired: the input, the request builder, the journal, the pool of
keys, the transport, the retry policy and the progress display go into one `Engine`.

A run has three passes over the input, each streamed: *ingest* (validate every row and
fingerprint it into the journal, so bad input fails before money is spent and a changed input
is caught row by row), *send* (only rows the journal has not finished), and *merge* (the
output, in input order, from the input and the journal).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from .account import Summary, cost_of, failures_from
from .clock import Clock, MonotonicClock
from .config import RunConfig
from .engine import Engine, EngineOutcome
from .errors import ConfigError, InputError, SquallError
from .events import KeyStats, RunStats
from .inputs import InputSource, open_input
from .journal import Journal, JournalStats, discard
from .journal_port import LocalJournal
from .outputs import merge_fields, open_writer
from .pool import EndpointPool, iter_keys
from .progress import Mode, Progress
from .prompts import ROW_FINGERPRINT, RequestBuilder, check_template, row_fingerprinter
from .records import RequestSpec, Row, RowResult
from .redact import Redactor
from .retry import RetryPolicy
from .tokens import estimate_tokens  # noqa: F401  # re-exported for users estimating by hand
from .transport import Target, Transport, make_target

_SETTING_FIELDS = set(RunConfig.model_fields)


@dataclass(frozen=True)
class RunResult:
    """What a run gives back: its account, and where its output and journal are."""

    summary: Summary
    output: Path | None
    journal: Path
    source: InputSource = field(repr=False)

    @property
    def exit_code(self) -> int:
        """0 every row done, 1 some failed or left pending, 130 interrupted."""
        if self.summary.status == "interrupted":
            return 130
        if self.summary.status == "dry-run":
            return 0
        return 0 if self.summary.complete else 1

    def rows(self) -> Iterator[dict[str, Any]]:
        """Yield the merged output rows in input order: input fields plus the answer columns."""
        with Journal.open(self.journal, read_only=True) as journal:
            for row, result in _merge(self.source, journal):
                yield merge_fields(row.data, result)

    def to_pandas(self) -> Any:
        """Return the merged output as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            from .errors import MissingExtraError

            raise MissingExtraError("RunResult.to_pandas()", "pandas", "pandas") from None
        return pd.DataFrame(list(self.rows()))


def _merge(source: InputSource, journal: Journal) -> Iterator[tuple[Row, RowResult | None]]:
    """Pair each input row with its journal result (None if the journal has none yet)."""
    results = journal.iter_results()
    pending = next(results, None)
    for row in source.rows():
        while pending is not None and pending.index < row.index:
            pending = next(results, None)
        if pending is not None and pending.index == row.index:
            yield row, pending
            pending = next(results, None)
        else:
            yield row, None


def resolve_config(config: str | Path | RunConfig | None, settings: Mapping[str, Any]) -> RunConfig:
    """Return the run's config: a file (or the environment) with `settings` on top."""
    unknown = set(settings) - _SETTING_FIELDS - {"base_url", "key_env", "rpm", "tpm", "concurrency"}
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {sorted(unknown)}: known ones are {sorted(_SETTING_FIELDS)}"
        )
    if isinstance(config, RunConfig):
        direct = {k: v for k, v in settings.items() if k in _SETTING_FIELDS and v is not None}
        flags = {k: v for k, v in settings.items() if k not in _SETTING_FIELDS}
        if flags:
            raise ConfigError(
                f"{sorted(flags)} need a config file or none; with a RunConfig, set its endpoints"
            )
        return config_mod.with_overrides(config, direct)
    return config_mod.load(config, overrides=settings)


def default_journal(output: str | Path | None, source: InputSource, settings_digest: str) -> Path:
    """Return where the journal lives when not given: beside the output, else under .squall/."""
    if output is not None:
        return Path(f"{output}.squall.sqlite")
    h = hashlib.blake2b(digest_size=8)
    h.update(settings_digest.encode())
    h.update(source.name.encode())
    if source.name.startswith("<"):
        for row in source.rows():  # in-memory data: its content names it
            h.update(repr(sorted(row.data.items())).encode())
    elif source.path is not None:
        with contextlib.suppress(OSError):
            st = os.stat(source.path)
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(".squall") / f"{h.hexdigest()}.sqlite"


def _todo_specs(
    source: InputSource, builder: RequestBuilder, todo: Iterator[int], batch: bool
) -> Iterator[RequestSpec]:
    """Yield requests for the rows the journal has not finished, streaming the input."""
    want = next(todo, None)
    if want is None:
        return
    for row in source.rows():
        if row.index == want:
            yield builder.build(row, batch=batch)
            want = next(todo, None)
            if want is None:
                return


def _with_models(cfg: RunConfig, source: InputSource, batch: bool) -> RunConfig:
    """Return `cfg` with a model for every endpoint, before any file is written.

    OpenAI batch lines name their model in each body, so a batch input needs none in the
    config: the first line's model then stands in for the pool (each line is still sent
    with its own, and a line without one is refused by `_checked_rows`).

    Raises:
        ConfigError: an endpoint has no model, and the input does not name one either.
    """
    missing = [ep for ep in cfg.endpoints if not (ep.model or cfg.model)]
    if not missing:
        return cfg
    if batch:
        body = source.first_row().data.get("body")
        model = body.get("model") if isinstance(body, Mapping) else None
        if isinstance(model, str) and model:
            return cfg.model_copy(update={"model": model})
    cfg.model_for(missing[0])  # raises the ConfigError that says where to set it
    return cfg


def _checked_rows(
    source: InputSource,
    builder: RequestBuilder,
    batch: bool,
    *,
    line_models: bool,
    fingerprint: Callable[[Mapping[str, Any]], str],
) -> Iterator[tuple[int, int, str]]:
    """Yield every row's (index, line, fingerprint) once its request builds, streaming; with
    `line_models`, each batch line must name its model (none is configured); `fingerprint`
    is the journal's scheme."""
    for row in source.rows():
        spec = builder.build(row, batch=batch)
        if line_models and spec.model is None:
            raise InputError(
                'body has no "model" and no model is configured: add one to each line\'s '
                "body, or pass --model",
                file=source.name,
                line=spec.line,
                field="body.model",
            )
        # The row's content, not its request: a settings change is told apart and named.
        yield row.index, row.line, fingerprint(row.data)


def _models(cfg: RunConfig) -> dict[str, str]:
    out = {}
    for ep in cfg.endpoints:
        with contextlib.suppress(ConfigError):
            out[ep.name] = cfg.model_for(ep)
    return out


def summarize(
    stats: JournalStats,
    cfg_prices: Mapping[str, Any],
    models_by_endpoint: Mapping[str, str],
    *,
    status: str,
    reason: str | None = None,
    run: RunStats | None = None,
    keys: tuple[KeyStats, ...] = (),
    wall_s: float | None = None,
    cut: int = 0,
    journal: Path | None = None,
    output: Path | None = None,
) -> Summary:
    """Return the account of a journal (plus this session's counters when given)."""
    cost: float | None = 0.0
    for ep, usage in stats.tokens_by_endpoint.items():
        c = cost_of(
            cfg_prices, models_by_endpoint.get(ep), usage.prompt_tokens, usage.completion_tokens
        )
        if c is None:
            cost = None
            break
        assert cost is not None
        cost += c
    if not stats.tokens_by_endpoint and not cfg_prices:
        cost = None
    return Summary(
        status=status,
        reason=reason,
        total=stats.total,
        done=stats.done,
        failed=stats.failed,
        pending=stats.total - stats.done - stats.failed,
        failures=failures_from({k: (v.count, v.rows) for k, v in stats.failures.items()}),
        requests_sent=stats.requests_sent,
        retries=run.retries if run else 0,
        in_flight_at_crash=stats.in_flight_at_open,
        cut_in_flight=cut,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cost=cost,
        wall_s=wall_s if wall_s is not None else stats.wall_s,
        done_this_session=run.done if run else stats.done,
        keys=keys,
        journal=str(journal) if journal else None,
        output=str(output) if output else None,
    )


def _targets(cfg: RunConfig) -> dict[str, Target]:
    """Return each key id's URL and credentials: the only table where ids meet secrets."""
    return {
        key_id: make_target(
            ep.base_url, key.key.reveal(), timeout_s=ep.timeout_s, extra_headers=ep.headers
        )
        for key_id, ep, key in iter_keys(cfg)
    }


class _Interrupts:
    """First Ctrl-C (or SIGTERM): stop sending and land what is in flight. Second: cut."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._count = 0
        self._installed: list[int] = []

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._fire)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        return self

    def _fire(self) -> None:
        self._count += 1
        if self._count == 1:
            self._engine.request_stop("interrupted")
        else:
            self._engine.request_stop("interrupted")
            self._engine.cut()

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)


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
    clock: Clock | None = None,
    on_engine: Callable[[Engine], None] | None = None,
    **settings: Any,
) -> RunResult:
    """Run every row of `data` through the configured endpoints; return the account.

    Args:
        data: a file path (.jsonl, .csv, .parquet, OpenAI batch lines), a DataFrame, a list
            of prompt strings or of dicts.
        output: where to write the merged output (format by extension), in input order.
        config: a TOML file, a RunConfig, or None (environment and `settings` only).
        journal: the journal file (default: OUTPUT.squall.sqlite, else under .squall/).
        restart: discard the journal first and start fresh.
        retry_failed: send rows that failed for good again (by default only rows whose
            retryable errors ran out of tries are sent again).
        dry_run: validate the input and estimate tokens and cost; send nothing.
        progress: "auto", "rich", "plain" or "off".
        settings: RunConfig fields (model=, template=, max_tokens=, ...) and endpoint flags
            (base_url=, key_env=[...], rpm=, tpm=, concurrency=) over the config.

    Raises:
        ConfigError, InputError, InputChangedError, JournalError, OutputError: nothing was
            sent that is not journaled; the message says what to do.
    """
    cfg = resolve_config(config, settings)
    clock = clock or MonotonicClock()
    source = open_input(data, fmt=input_format)
    batch = source.is_batch
    builder = RequestBuilder(
        template=cfg.template,
        system=cfg.system,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        params=cfg.params,
        source_name=source.name,
    )
    if not batch and cfg.template:
        check_template(
            cfg.template, source.columns(), source_name=source.name, line=source.first_row().line
        )
    fp = builder.settings_fingerprint(cfg.model)
    if dry_run:
        return _dry_run(cfg, source, builder, batch)
    config_mod.require_endpoints(cfg)
    pool_cfg = _with_models(cfg, source, batch)
    jpath = Path(journal) if journal is not None else default_journal(output, source, fp.digest)
    if restart:
        discard(jpath)
    # A journal this call creates and that fails before anything is sent (bad row, bad key
    # setting) is removed again: it holds no paid work, and keeping it would make the
    # corrected rerun fail with "the settings changed".
    created = not jpath.exists()
    started = clock.now()
    jr = Journal.open(jpath, sync=cfg.journal_sync, group_commits=True)
    models = _models(pool_cfg)
    outcome = EngineOutcome("stopped", "did not start")
    stats = RunStats()
    keys: tuple[KeyStats, ...] = ()
    session = False
    failed_early = False
    jstats: JournalStats | None = None
    try:
        if output is not None:
            # A bad output path (unknown extension, batch lines into CSV, unwritable) must
            # fail before money is spent, not at the merge after the last answer.
            open_writer(Path(output), batch=batch).abort()
        scheme = jr.check_settings(
            fp.digest, fp.settings, input_name=source.name, row_fingerprint=ROW_FINGERPRINT
        )
        report = jr.ingest(
            _checked_rows(
                source,
                builder,
                batch,
                line_models=pool_cfg is not cfg,
                fingerprint=row_fingerprinter(scheme),
            )
        )
        jr.set_meta("models", _json(models))
        jr.set_meta("prices", _json({k: v.model_dump() for k, v in cfg.prices.items()}))
        spent = 0.0
        if cfg.max_cost is not None:
            # The cap bounds the whole run's spend, not each resume's: count what the
            # journal's answers already cost.
            spent = summarize(jr.statistics(), cfg.prices, models, status="").cost or 0.0
        jr.begin_session()
        session = True
        stats = RunStats(
            total=report.total, done_before=report.done, failed_before=report.failed, cost=spent
        )
        pool = EndpointPool.from_config(pool_cfg, clock, notify=stats.notice)
        if report.in_flight:
            stats.notice(
                f"{report.in_flight} request(s) were in flight when the last run died: "
                "they may have been billed, and are sent again"
            )
        redactor = Redactor([k.key.reveal() for ep in cfg.endpoints for k in ep.keys])
        price_models = [cfg.prices[m] for m in set(models.values()) if m in cfg.prices]

        def est_cost(spec: RequestSpec) -> float:
            if not price_models:
                return 0.0
            completion = cfg.max_tokens or 256
            return max(
                (spec.est_prompt_tokens * p.input + completion * p.output) / 1e6
                for p in price_models
            )

        def cost(model: str, pt: int, ct: int) -> float:
            return cost_of(cfg.prices, model, pt, ct) or 0.0

        async with Transport(
            max_connections=pool.max_in_flight,
            redactor=redactor,
            keep_raw=batch,
            targets=_targets(pool_cfg),
        ) as transport:
            engine = Engine(
                pool=pool,
                transport=transport,
                journal=LocalJournal(jr),
                retry=RetryPolicy(cfg.retry, random.Random()),
                clock=clock,
                stats=stats,
                max_tokens=cfg.max_tokens,
                cost=cost,
                max_cost=cfg.max_cost,
                est_cost=est_cost if cfg.max_cost is not None else None,
                grace_s=cfg.grace_s,
            )
            if on_engine is not None:
                on_engine(engine)
            todo = _todo_specs(source, builder, jr.iter_todo(retry_failed=retry_failed), batch)
            async with Progress(stats, pool.statistics, clock, mode=progress or cfg.progress):
                with _Interrupts(engine):
                    outcome = await engine.run(todo)
        keys = pool.statistics()
    except BaseException:
        failed_early = not session
        raise
    finally:
        if session:
            jr.set_meta("last_stop_reason", outcome.reason or "")
            jr.end_session(outcome.status)  # type: ignore[arg-type]  # EngineOutcome.status is one of SessionOutcome
        wall = clock.now() - started
        if not failed_early:
            jstats = jr.statistics()
        jr.close()
        if failed_early and created:
            with contextlib.suppress(SquallError, OSError):
                discard(jpath)
    assert jstats is not None
    out_path = None
    if output is not None:
        out_path = Path(output)
        write_output(out_path, source, jpath, batch)
    summary = summarize(
        jstats,
        cfg.prices,
        models,
        status=outcome.status,
        reason=outcome.reason,
        run=stats,
        keys=keys,
        wall_s=wall,
        cut=outcome.cut_in_flight,
        journal=jpath,
        output=out_path,
    )
    return RunResult(summary=summary, output=out_path, journal=jpath, source=source)


def write_output(path: Path, source: InputSource, journal: Path, batch: bool) -> None:
    """Write the merged output from the input and the journal, streaming, in input order."""
    with Journal.open(journal, read_only=True) as jr, open_writer(path, batch=batch) as writer:
        for row, result in _merge(source, jr):
            writer.write(row, result)


def _dry_run(
    cfg: RunConfig, source: InputSource, builder: RequestBuilder, batch: bool
) -> RunResult:
    n = 0
    tokens = 0
    preview: list[str] = []
    for row in source.rows():
        spec = builder.build(row, batch=batch)
        n += 1
        tokens += spec.est_prompt_tokens
        if len(preview) < 3:
            body = _json({"model": spec.model or cfg.model, **spec.body}, sort=False)
            preview.append(f"line {spec.line}: {body[:300]}")
    models = set(_models(cfg).values()) or ({cfg.model} if cfg.model else set())
    cost = None
    for m in models:
        c = cost_of(cfg.prices, m, tokens, (cfg.max_tokens or 0) * n)
        if c is not None:
            cost = max(cost or 0.0, c)
    summary = Summary(
        status="dry-run",
        total=n,
        done=0,
        failed=0,
        pending=n,
        prompt_tokens=tokens,
        completion_tokens=(cfg.max_tokens or 0) * n,
        cost=cost,
        reason="nothing sent; tokens are estimates"
        + ("" if cfg.max_tokens else ", answers not counted (set max_tokens to bound them)"),
        preview=tuple(preview),
    )
    return RunResult(summary=summary, output=None, journal=Path(os.devnull), source=source)


def _json(value: Any, *, sort: bool = True) -> str:
    return json.dumps(value, sort_keys=sort, ensure_ascii=False)


def run(data: Any, **kwargs: Any) -> RunResult:
    """Run `data` to the end and return the account; see `arun` for the arguments.

    Works in a plain script and in a Jupyter cell alike: inside a running event loop it runs
    on a fresh loop in a worker thread and waits for it (squall never nests or patches loops).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(data, **kwargs))
    box: dict[str, Any] = {}
    engines: list[Engine] = []
    worker_loop: list[asyncio.AbstractEventLoop] = []

    def keep(engine: Engine) -> None:
        engines.append(engine)
        worker_loop.append(asyncio.get_running_loop())

    def work() -> None:
        try:
            box["result"] = asyncio.run(arun(data, on_engine=keep, **kwargs))
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e

    thread = threading.Thread(target=work, name="squall-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        # Jupyter's "interrupt kernel": stop sending, land what is in flight, then return.
        if engines:
            worker_loop[0].call_soon_threadsafe(engines[0].request_stop, "interrupted")
        thread.join()
    if "error" in box:
        raise box["error"]
    result: RunResult = box["result"]
    return result
