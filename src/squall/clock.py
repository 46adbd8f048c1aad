"""Time, behind a small interface, so limits and retries can be tested without sleeping.

`Waker` is the one way squall's parts wait for "something changed, or a timeout".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time in seconds, and a way to wait for it."""

    def now(self) -> float:
        """Return the current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (returns at once for 0 or less)."""
        ...


class MonotonicClock:
    """The real clock: time.monotonic() and asyncio.sleep()."""

    def now(self) -> float:
        """Return time.monotonic()."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running loop."""
        await asyncio.sleep(max(0.0, seconds))


def wall_time() -> float:
    """Return seconds since the epoch, for records people read (not for scheduling)."""
    return time.time()


class Waker:
    """Lets any number of tasks wait until woken, or until a timeout passes on a Clock.

    The engine waits on one for "a request ended", the pool on another for "a lease came
    back". Time passes on the Clock, not the loop's timer, so a FakeClock drives both.
    """

    __slots__ = ("_clock", "_waiters")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        """Wake every task waiting now (a task that starts waiting later is not woken)."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Return when woken, or once `timeout` seconds (None: no limit) passed on the Clock."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        sleeper = None
        if timeout is not None:
            sleeper = loop.create_task(self._clock.sleep(max(0.0, timeout)))
            sleeper.add_done_callback(lambda _t: _resolve(fut))
        try:
            await fut
        finally:
            if sleeper is not None:
                sleeper.cancel()
            # Timed out or cancelled: wake() has not taken it (the list it took is gone).
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
