"""Time, behind a small interface, so limits and retries can be tested without sleeping."""

from __future__ import annotations

import asyncio
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
