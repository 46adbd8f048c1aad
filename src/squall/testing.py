"""Test equipment for squall and its users: port doubles, a fake clock, the simulator.

`FakeTransport` and `MemoryJournal` implement the engine's ports (`squall.ports`) in memory, as
httpx ships `MockTransport`: the real `Engine` runs on them with no sockets and no sleeps.
`FakeClock` stands in for `squall.clock.Clock` so limits and retries can be tested without
sleeping. The provider simulator (`squall.simulator`, re-exported here) is a real
OpenAI-compatible server on 127.0.0.1; `start_simulator_process` runs it as a separate
process, for tests that kill or restart things.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import JournalError, ServeError
from .limits import RateInfo
from .ports import Lease
from .records import Completion, ErrorInfo, RowState
from .simulator import (
    LedgerEntry,
    SimConfig,
    SimKey,
    Simulator,
    demo_config,
    expected_answer,
    iter_ledger_file,
    prompt_digest,
)

__all__ = [
    "FakeClock",
    "FakeTransport",
    "JournalEvent",
    "LedgerEntry",
    "MemoryJournal",
    "SimConfig",
    "SimKey",
    "Simulator",
    "demo_config",
    "expected_answer",
    "prompt_digest",
    "read_ledger_file",
    "start_simulator_process",
    "stop_process",
]


class FakeClock:
    """A `Clock` whose time moves only when told: `sleep()` and `advance()` move it at once.

    Attributes:
        sleeps: every duration passed to `sleep()`, in order, for tests to check.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the fake current time in seconds."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Move time forward by `seconds` (0 or less: not at all), then yield to the loop once."""
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` without waiting."""
        if seconds < 0:
            raise ValueError("a clock cannot go back: advance() needs seconds >= 0")
        self._now += seconds


Answer = Completion | tuple[Completion, RateInfo | None]
RawAnswer = bytes | dict[str, Any] | tuple[bytes | dict[str, Any], RateInfo | None]
Handler = Callable[[Lease, dict[str, Any]], Answer | RawAnswer | Awaitable[Answer | RawAnswer]]
"""What a FakeTransport asks: given the lease and the decoded request body, return the
completion (optionally with rate headers), or raise a squall RequestError; may be async. A
request sent unread (`send_raw`: a pack of embeddings) is answered by the 200 body instead,
as bytes or as a dict to encode."""


class FakeTransport:
    """A `TransportPort` that answers every request by calling `handler`, with no socket.

    Attributes:
        requests: every (lease, decoded body) sent, in order.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[tuple[Lease, dict[str, Any]]] = []

    async def send(self, lease: Lease, body: bytes) -> tuple[Completion, RateInfo | None]:
        """Decode `body`, hand it to the handler, and return what it gives."""
        answer = await self._ask(lease, body)
        if isinstance(answer, tuple) and isinstance(answer[0], Completion):
            return answer  # type: ignore[return-value]  # a (Completion, rate) pair
        assert isinstance(answer, Completion), "a FakeTransport handler returns a Completion"
        return answer, None

    async def send_raw(self, lease: Lease, body: bytes) -> tuple[bytes, RateInfo | None]:
        """Decode `body`, hand it to the handler, and return the 200 body it gives."""
        answer = await self._ask(lease, body)
        rate: RateInfo | None = None
        if isinstance(answer, tuple):
            answer, rate = answer
        if isinstance(answer, dict):
            answer = json.dumps(answer).encode()
        assert isinstance(answer, bytes), "a FakeTransport handler answers send_raw with bytes"
        return answer, rate

    async def _ask(self, lease: Lease, body: bytes) -> Answer | RawAnswer:
        request = json.loads(body)
        self.requests.append((lease, request))
        answer = self._handler(lease, request)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One change a MemoryJournal saw: ("sent" | "done" | "retry" | "failed", row index)."""

    verb: str
    index: int


class MemoryJournal:
    """A `JournalPort` in memory, with the real journal's rule that a DONE row is final.

    Attributes:
        events: every change, in the order the engine made it.
        states: each row's state now.
        sent: how many requests each row had sent.
        answers: the completion of each row done.
        errors: the last error of each row that failed or is to be retried.
        flushes: how many times the engine flushed.
    """

    def __init__(self) -> None:
        self.events: list[JournalEvent] = []
        self.states: dict[int, RowState] = {}
        self.sent: Counter[int] = Counter()
        self.answers: dict[int, Completion] = {}
        self.errors: dict[int, ErrorInfo] = {}
        self.flushes = 0

    def _change(self, verb: str, index: int, state: RowState) -> None:
        if self.states.get(index) is RowState.DONE:
            raise JournalError(f"cannot {verb} row {index}: it is DONE already, and DONE is final")
        self.states[index] = state
        self.events.append(JournalEvent(verb, index))

    async def mark_sent(self, index: int) -> None:
        """Record that row `index` is being sent."""
        self._change("sent", index, RowState.SENT)
        self.sent[index] += 1

    async def record_success(
        self,
        index: int,
        completion: Completion,
        *,
        latency_s: float,
        attempts: int,
        endpoint: str,
        model: str | None = None,
    ) -> None:
        """Record row `index`'s answer."""
        self._change("done", index, RowState.DONE)
        self.answers[index] = completion

    async def record_retry(self, index: int, error: ErrorInfo) -> None:
        """Record a failed try to be repeated."""
        self._change("retry", index, RowState.PENDING)
        self.errors[index] = error

    async def record_failure(
        self,
        index: int,
        error: ErrorInfo,
        *,
        attempts: int,
        endpoint: str | None,
        retryable: bool,
    ) -> None:
        """Record that row `index` failed for good."""
        self._change("failed", index, RowState.FAILED)
        self.errors[index] = error

    async def flush(self) -> None:
        """Count the flush (memory needs none)."""
        self.flushes += 1


def read_ledger_file(path: str | Path) -> list[LedgerEntry]:
    """Return the entries a simulator's `--ledger-file` holds (a torn last line is skipped)."""
    return list(iter_ledger_file(path))


def _read_first_line(proc: subprocess.Popen[str], timeout_s: float) -> str | None:
    """Return the first stdout line of `proc`, or None if none came within `timeout_s`."""
    lines: queue.Queue[str] = queue.Queue(maxsize=1)

    def read() -> None:
        assert proc.stdout is not None
        lines.put(proc.stdout.readline())

    threading.Thread(target=read, name="simulator-stdout", daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return None


def start_simulator_process(
    config: SimConfig,
    ledger_file: str | Path | None = None,
    *,
    port: int = 0,
    timeout_s: float = 30.0,
) -> tuple[subprocess.Popen[str], str]:
    """Start `python -m squall.simulator` serving `config`; return the process and base URL.

    The config travels on the child's stdin, so keys never show in the process list. Stop
    the process with `stop_process(proc)` (SIGTERM, then SIGKILL), or kill it on purpose.

    Raises:
        ServeError: the process exited or printed no URL within `timeout_s`.
    """
    env = dict(os.environ)
    # The child must import this same squall, even when it came from a path not installed.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "squall.simulator", "--port", str(port), "--config", "-"]
    if ledger_file is not None:
        cmd += ["--ledger-file", str(ledger_file)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config.to_dict()))
    proc.stdin.close()
    line = _read_first_line(proc, timeout_s)
    if not line or not line.startswith("http://"):
        stop_process(proc)
        raise ServeError(
            f"the simulator process printed no URL within {timeout_s:g} s (exit code "
            f"{proc.returncode}); run `python -m squall.simulator` by hand to see why"
        )
    return proc, line.strip()


def stop_process(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> int:
    """Stop `proc` with SIGTERM, then SIGKILL after `timeout_s`; return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode
