"""The `Simulator`: the provider served on 127.0.0.1, in a thread or on a running loop.

It owns the listening socket and the lifecycle (start, stop, pause, resume) and the hooks a
test uses (`set_key_limits`, `ledger`, `served_count`, `in_flight`); what each request gets
is the `Provider`'s business (`provider.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any

from aiohttp import web

from ..clock import Clock, MonotonicClock
from ..errors import ConfigError, ServeError
from ..redact import mask_key
from .ledger import Ledger, LedgerEntry
from .provider import Provider
from .settings import SimConfig

HOST = "127.0.0.1"


async def _cancel_other_tasks() -> None:
    """Cancel every other task on the running loop and wait (bounded) for them to end."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)


class Simulator:
    """A simulated OpenAI-compatible provider on 127.0.0.1 (test equipment, not a real API).

    Use it in a background thread with its own loop (`start()`/`stop()` or `with`), or
    inside a running loop (`await astart()`/`await astop()`).

    Args:
        config: how it behaves.
        port: the port to listen on; 0 picks a free one.
        clock: drives the rate limits only (latency uses real sleeps); pass a
            `squall.testing.FakeClock` to make refusals independent of machine speed.
        ledger_file: append each ledger entry to this file as a JSON line, flushed.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        port: int = 0,
        clock: Clock | None = None,
        ledger_file: str | Path | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self._port = port
        self._clock: Clock = clock or MonotonicClock()
        path = Path(ledger_file) if ledger_file is not None else None
        self._ledger = Ledger(self.config.ledger_max, path)
        self._provider = Provider(self.config, self._clock, self._ledger)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client takes as base_url: `http://127.0.0.1:PORT/v1`."""
        if not self._port:
            raise ServeError("the simulator is not started: call start() first")
        return f"http://{HOST}:{self._port}/v1"

    @property
    def port(self) -> int:
        """The port it listens on (0 before the first start)."""
        return self._port

    def start(self) -> str:
        """Serve from a background thread with its own event loop; return the base URL."""
        if self._thread is not None:
            raise ServeError("this simulator is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="squall-simulator", daemon=True)
        thread.start()
        self._thread = thread
        try:
            return asyncio.run_coroutine_threadsafe(self.astart(), loop).result(timeout=30)
        except BaseException:
            self._stop_thread(loop)
            raise

    def stop(self) -> None:
        """Stop serving and end the background thread (in-flight requests are cut off)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout=30)
        finally:
            self._stop_thread(loop)

    def _stop_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # Handlers cancelled by astop() must finish unwinding before the loop stops, or
        # asyncio reports them as destroyed while pending (as asyncio.run avoids too).
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()
        self._thread = None
        self._loop = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def astart(self) -> str:
        """Serve on the running loop; return the base URL."""
        self._loop = asyncio.get_running_loop()
        self._ledger.open_file()
        self._http = web.Server(self._provider.handle, access_log=None)
        await self._listen()
        return self.base_url

    async def astop(self) -> None:
        """Stop serving on the running loop; in-flight requests get 0.2 s, then are cancelled.

        Batches still running are cancelled too (they live in memory only).
        """
        self._close_listener()
        self._provider.batches.close()
        if self._http is not None:
            self._http.pre_shutdown()
            await self._http.shutdown(0.2)
            self._http = None
        self._ledger.close_file()

    def pause(self) -> None:
        """Make the endpoint refuse connections: stop listening and drop open connections."""
        self._call(self.apause)

    def resume(self) -> None:
        """Listen again on the same port after `pause()`."""
        self._call(self.aresume)

    async def apause(self) -> None:
        """`pause()` for a simulator started with `astart()`, on its loop."""
        self._close_listener()
        if self._http is not None:
            for conn in self._http.connections:
                conn.force_close()

    async def aresume(self) -> None:
        """`resume()` for a simulator started with `astart()`, on its loop."""
        await self._listen()

    async def _listen(self) -> None:
        if self._listener is not None or self._http is None or self._loop is None:
            return
        try:
            # A deep accept queue, as a provider's load balancer has: with asyncio's default
            # (100), a client opening a few hundred connections at once has SYNs dropped and
            # waits out TCP's one-second retransmit, which no real provider would show.
            self._listener = await self._loop.create_server(
                self._http, HOST, self._port, backlog=1024
            )
        except OSError as e:
            raise ServeError(
                f"the simulator cannot listen on {HOST}:{self._port}: {e.strerror or e}; "
                "pick another port, or 0 for a free one"
            ) from None
        self._port = self._listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            # Closing stops accepting at once; wait_closed() would wait for every client.
            self._listener.close()
            self._listener = None

    def _call(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run coroutine function `make` on the simulator's loop and wait for it."""
        loop = self._loop
        if loop is None:
            raise ServeError("the simulator is not started: call start() first")
        if self._thread is not None and threading.current_thread() is not self._thread:
            asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=30)
        else:
            raise ServeError("on the simulator's own loop, await apause()/aresume() instead")

    # -- test hooks --------------------------------------------------------------------------

    def set_key_limits(
        self,
        key: str,
        *,
        rpm: float | EllipsisType | None = ...,
        tpm: float | EllipsisType | None = ...,
        max_concurrency: int | EllipsisType | None = ...,
    ) -> None:
        """Change one key's limits from now on (None: unlimited; left out: unchanged).

        The key keeps its limit mode (bucket or sliding window), and what it already spent.
        Safe to call from any thread; when it returns, the next request sees the new limits.

        Raises:
            ConfigError: `key` is not one of the configured keys.
        """
        state = self._provider.keys.get(key)
        if state is None:
            raise ConfigError(f"set_key_limits: {mask_key(key)} is not a configured key")

        def apply() -> None:
            now = self._clock.now()
            if not isinstance(rpm, EllipsisType):
                state.set_limit("requests", rpm, now)
            if not isinstance(tpm, EllipsisType):
                state.set_limit("tokens", tpm, now)
            if not isinstance(max_concurrency, EllipsisType):
                state.max_concurrency = max_concurrency

        loop = self._loop
        if loop is None or not loop.is_running() or self._on_loop_thread():
            apply()
            return

        async def on_loop() -> None:
            apply()

        asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=30)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def ledger(self) -> list[LedgerEntry]:
        """Return a copy of the ledger: one entry per chat-completion request handled."""
        return self._ledger.entries()

    def served_count(self) -> int:
        """Return how many complete 200 answers were written."""
        return self._ledger.served_count

    def in_flight(self) -> int:
        """Return the number of chat requests being handled now, over all keys."""
        return self._provider.in_flight()
