"""Run one engine from start to stop: start, wait until ready, prove the adapters, serve, stop.

`supervise()` is what `squall serve` calls once the `Launch` is planned. SIGTERM and SIGHUP
are turned into a clean stop like Ctrl-C, and every way out stops the engine's whole tree.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ..errors import ServeError
from .client import ModelInfo
from .endpoints import endpoints_block, write_endpoints
from .launch import Launch
from .probe import ProbeReport, answers_unknown_name, compare_adapters
from .process import EngineProcess

Say = Callable[[str], None]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class StopRequested(BaseException):
    """A signal asked squall to stop (a BaseException, as KeyboardInterrupt: none swallows it)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into `StopRequested` in the main thread, for the block's length."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise StopRequested(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: callers there handle stopping themselves
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How `supervise` behaves besides what the engine runs."""

    log_path: Path
    timeout_s: float = 900.0
    probe: bool = True
    require_applied: bool = False
    """Stop with exit code 1 when an adapter's answers all equal the base's."""
    check_only: bool = False
    """Stop after the checks and the endpoints block, instead of serving until a signal."""
    endpoints_path: Path | None = None
    key_var: str | None = "API_KEY"
    endpoint_name: str | None = None
    grace_s: float = 15.0


@dataclass(frozen=True)
class ServeResult:
    """What one `supervise` call saw, for its caller and tests."""

    exit_code: int
    models: tuple[ModelInfo, ...] = ()
    report: ProbeReport | None = None
    endpoints: str | None = None


def _write_files(launch: Launch) -> None:
    for path, text in launch.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path in launch.secret_files:
            # Created 0600 before any byte of the key is written.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            path.write_text(text, encoding="utf-8")


def _remove_secret_files(launch: Launch) -> None:
    for path in launch.secret_files:
        path.unlink(missing_ok=True)


def describe_models(models: list[ModelInfo] | tuple[ModelInfo, ...]) -> str:
    """Return `/v1/models` as one line: `base, arith (on base)`."""
    parts = [f"{m.id} (on {m.parent})" if m.parent else m.id for m in models]
    return ", ".join(parts) if parts else "(none)"


def served_block(launch: Launch, opts: ServeOptions) -> str:
    """Return the `[[endpoints]]` block that points a run at `launch`'s engine."""
    default = launch.adapter_names[0] if launch.adapter_names else launch.base_name
    port = launch.base_url.rsplit(":", 1)[-1].split("/")[0]
    comments = [f"squall serve: {launch.engine} on {launch.base_url}"]
    if launch.answers_any_name:
        comments.append("this engine answers any model name: check the name you send")
    return endpoints_block(
        name=opts.endpoint_name or f"{launch.engine}-{port}",
        base_url=launch.base_url,
        models=launch.model_names,
        default_model=default,
        key_var=opts.key_var,
        max_concurrency=launch.max_concurrency,
        comments=comments,
    )


def check_engine(
    launch: Launch, proc: EngineProcess, api_key: str | None, opts: ServeOptions, say: Say
) -> tuple[list[ModelInfo], ProbeReport | None]:
    """Return `/v1/models` once ready and, unless turned off, the adapter probe's report.

    Raises:
        ServeError: the engine died or never listed every model.
    """
    say(f"waiting for {launch.base_url}/models to list {', '.join(launch.model_names)} ...")
    last_said = [0.0]

    def on_wait(elapsed: float, missing: set[str]) -> None:
        if elapsed - last_said[0] >= 30:
            last_said[0] = elapsed
            say(f"  still loading after {elapsed:.0f} s (log: {proc.log_path})")

    started = time.monotonic()
    models = proc.wait_ready(
        launch.base_url,
        launch.model_names,
        api_key=api_key,
        timeout_s=opts.timeout_s,
        on_wait=on_wait,
    )
    say(f"ready after {time.monotonic() - started:.0f} s: {describe_models(models)}")
    if not opts.probe:
        return models, None
    say("proving the adapters are applied (greedy probe prompts to base and adapters) ...")
    try:
        report = compare_adapters(
            launch.base_url, launch.base_name, launch.adapter_names, api_key=api_key
        )
    except ServeError as e:
        # The engine listed its models but fails to answer: say so, and keep it up for a look.
        report = ProbeReport(unjudged=f"a probe request failed: {e}")
    any_name = answers_unknown_name(launch.base_url, api_key=api_key)
    report = ProbeReport(
        verdicts=report.verdicts,
        unjudged=report.unjudged,
        answers_any_name=any_name,
        notes=report.notes,
    )
    for line in report.lines():
        say(line)
    return models, report


def supervise(
    launch: Launch, api_key: str | None, opts: ServeOptions, say: Say, emit: Say
) -> ServeResult:
    """Return the outcome of running `launch` until a signal (or, with `check_only`, the checks).

    `say` gets progress and warnings; `emit` gets the `[[endpoints]]` block.

    Raises:
        ServeError: the engine could not start, died, or never became ready (it is stopped).
    """
    for note in launch.notes:
        say(f"note: {note}")
    say(f"starting: {launch.display()}")
    say(f"engine log: {opts.log_path}")
    _write_files(launch)
    proc = EngineProcess(launch.argv, log_path=opts.log_path, env=launch.env)
    models: list[ModelInfo] = []
    report: ProbeReport | None = None
    block: str | None = None
    with stop_on_signals():
        try:
            proc.start()
            models, report = check_engine(launch, proc, api_key, opts, say)
            block = served_block(launch, opts)
            emit(block)
            if opts.endpoints_path is not None:
                write_endpoints(opts.endpoints_path, block)
                say(f"wrote {opts.endpoints_path}")
            if report is not None and opts.require_applied and not report.all_applied:
                say("stopping: --require-applied and an adapter was not shown applied")
                return ServeResult(EXIT_FAILED, tuple(models), report, block)
            if opts.check_only:
                return ServeResult(EXIT_OK, tuple(models), report, block)
            say(f"serving on {launch.base_url}; Ctrl-C stops the engine")
            while (code := proc.poll()) is None:
                time.sleep(0.5)
            raise ServeError(
                f"the engine exited with code {code} while serving; its log "
                f"({opts.log_path}) ends with:\n{proc.log_tail()}"
            )
        except KeyboardInterrupt:
            say("Ctrl-C: stopping the engine")
            return ServeResult(EXIT_INTERRUPTED, tuple(models), report, block)
        except StopRequested as e:
            say(f"{signal.Signals(e.signum).name}: stopping the engine")
            return ServeResult(EXIT_OK, tuple(models), report, block)
        finally:
            proc.stop(grace_s=opts.grace_s)
            _remove_secret_files(launch)
