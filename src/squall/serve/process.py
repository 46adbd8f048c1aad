"""Run an engine as a process tree of its own: start it, wait until it is ready, stop all of it.

The engine starts in a new session (its own process group), so a terminal's Ctrl-C reaches
squall only, and squall ends the whole group: vLLM's engine-core workers and tokenizer
processes included. Everything the engine prints goes to one log file; its tail is shown
when the engine dies or never becomes ready.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from ..errors import ServeError
from .client import ModelInfo, list_models

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux only: if squall itself is killed (kill -9), the kernel sends the engine SIGTERM,
    # so no server is left holding the port. Elsewhere the engine outlives a killed squall.
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def tail(path: Path, lines: int = 40, max_bytes: int = 64_000) -> str:
    """Return the last `lines` lines of the file at `path` ('' when it is missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# A Python exception line ("ValueError: ...") or a logged error: what usually says why.
_ERROR_LINE = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b: |\bERROR\b.*\b\w*Error: ")


def explain(path: Path, lines: int = 40) -> str:
    """Return the log's last `lines` lines, led by its last error lines when the tail lacks them.

    Engines with worker processes (vLLM) print the root cause well before the tail, which
    only shows the parent's secondary traceback.
    """
    end = tail(path, lines)
    whole = tail(path, 5000, max_bytes=2_000_000)
    found: list[str] = []
    for line in reversed(whole.splitlines()):
        if " WARNING " in line:
            continue
        if _ERROR_LINE.search(line) and line not in end and line not in found:
            found.append(line)
            if len(found) == 3:
                break
    if not found:
        return end
    causes = "\n".join(reversed(found))
    return f"{causes}\n...\n{end}"


class EngineProcess:
    """One engine started as its own process group, logging to a file.

    Use as a context manager, or call `stop()` in a `finally`: both end the whole tree.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        self._env = dict(env or {})
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The engine's process id (also its process group id), once started."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the engine in a new session, its output appended to `log_path`.

        Raises:
            ServeError: the program cannot be executed.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self._env}
        # Python engines buffer stdout when it is a file; unbuffered keeps the log's tail current.
        env.setdefault("PYTHONUNBUFFERED", "1")
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self._cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as e:
                raise ServeError(f"cannot start {self.argv[0]}: {e.strerror or e}") from None

    def poll(self) -> int | None:
        """Return the engine's exit code, or None while it runs."""
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines the engine logged, led by earlier error lines (see `explain`)."""
        return explain(self.log_path, lines)

    def wait_ready(
        self,
        base_url: str,
        names: Sequence[str],
        *,
        api_key: str | None,
        timeout_s: float,
        poll_s: float = 0.5,
        on_wait: Callable[[float, set[str]], None] | None = None,
    ) -> list[ModelInfo]:
        """Return `/v1/models` once it lists every name in `names`.

        `on_wait(elapsed_s, missing)` is called after each poll that is not yet ready.

        Raises:
            ServeError: the engine exited, or `timeout_s` passed; the message ends with the
                log's tail.
        """
        start = time.monotonic()
        want = set(names)
        missing = set(want)
        last_error = "no answer yet"
        while True:
            code = self.poll()
            if code is not None:
                raise ServeError(
                    f"the engine exited with code {code} before it was ready; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            try:
                models = list_models(base_url, api_key=api_key, timeout_s=max(poll_s, 2.0))
            except ServeError as e:
                last_error = str(e)
            else:
                missing = want - {m.id for m in models}
                if not missing:
                    return models
                last_error = f"/v1/models lists {sorted(m.id for m in models)}"
            elapsed = time.monotonic() - start
            if elapsed >= timeout_s:
                raise ServeError(
                    f"the engine was not ready after {timeout_s:.0f} s ({last_error}; still "
                    f"missing {sorted(missing)}). Raise --timeout if it is still loading; its "
                    f"log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if on_wait is not None:
                on_wait(elapsed, missing)
            time.sleep(poll_s)

    def stop(self, grace_s: float = 15.0) -> int | None:
        """End the engine's whole process group: SIGTERM, then SIGKILL after `grace_s`.

        Returns:
            The engine's exit code, or None if it was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        pgid = proc.pid
        self._signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        # The leader may exit before its workers: sweep what is left of the group.
        if _group_alive(pgid):
            deadline = time.monotonic() + grace_s
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            self._signal_group(pgid, signal.SIGKILL)
        return proc.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def __enter__(self) -> EngineProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """Return True while a live (not zombie) process remains in group `pgid`."""
    proc = Path("/proc")
    if proc.is_dir():
        # Zombies stay in the group until their new parent reaps them, which a container's
        # init may never do: only running members count.
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the ")" closing the command name: state ppid pgrp ...
            fields = stat[stat.rfind(")") + 2 :].split()
            if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
