"""Ctrl-C and SIGTERM during a run: the first stops sending, the second cuts what is in flight.

Only the main thread may install signal handlers; a run in a worker thread (`run()` inside
Jupyter) is stopped by its caller instead (see `api.run`).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Protocol


class Stoppable(Protocol):
    """What Ctrl-C stops: the engine, or the Batch API driver."""

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop sending; what is in flight may land."""

    def cut(self) -> None:
        """Stop at once."""


class Interrupts:
    """First Ctrl-C (or SIGTERM): stop sending and land what is in flight. Second: cut."""

    def __init__(self, engine: Stoppable) -> None:
        self._engine = engine
        self._count = 0
        self._installed: list[int] = []

    def __enter__(self) -> Interrupts:
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
        self._engine.request_stop("interrupted")
        if self._count > 1:
            self._engine.cut()

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
