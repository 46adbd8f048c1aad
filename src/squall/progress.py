"""Live progress: a rich display on a terminal or in Jupyter, plain log lines elsewhere.

In a notebook the same display is shown as one cell output that updates in place (HTML,
through IPython's display handles, so no widget library is needed); notices come as lines
under it.

It reads only snapshots (`RunStats.statistics()`, `EndpointPool.statistics()`), a few times a
second, so the hot path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .clock import Clock
from .events import RunStats, Snapshot
from .pool import KeyState, KeyStats

Mode = Literal["auto", "rich", "plain", "off"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def resolve_mode(mode: Mode, stream: TextIO) -> Literal["rich", "plain", "off", "notebook"]:
    """Return the display to use: rich on a terminal or in a notebook, plain lines otherwise."""
    if mode == "auto":
        if in_notebook():
            return "notebook"
        return "rich" if stream.isatty() else "plain"
    if mode == "rich" and in_notebook():
        return "notebook"
    return mode


def to_html(renderable: RenderableType, width: int = 110) -> str:
    """Return `renderable` as a self-contained HTML fragment (for notebooks)."""
    console = Console(record=True, file=io.StringIO(), width=width, force_jupyter=False)
    console.print(renderable)
    return console.export_html(inline_styles=True, code_format=_HTML_FORMAT)


_HTML_FORMAT = '<pre style="font-family: monospace; line-height: 1.25">{code}</pre>'
"""rich's export_html page, cut down to the fragment a notebook output shows."""


class _NotebookView:
    """One notebook output that shows the latest rendering, updated in place."""

    def __init__(self, first: RenderableType) -> None:
        # Only ever called inside a kernel, where IPython is there (it has no type hints).
        self._ipd: Any = importlib.import_module("IPython.display")
        self._handle: Any = self._ipd.display(self._ipd.HTML(to_html(first)), display_id=True)

    def update(self, renderable: RenderableType) -> None:
        if self._handle is not None:
            self._handle.update(self._ipd.HTML(to_html(renderable)))


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds > 360000:
        return "--:--"
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class _Rate:
    """Rows per second over a sliding window of snapshots."""

    def __init__(self, span: float = 10.0) -> None:
        self._points: deque[tuple[float, int]] = deque()
        self._span = span

    def update(self, t: float, n: int) -> float:
        self._points.append((t, n))
        while len(self._points) > 2 and t - self._points[0][0] > self._span:
            self._points.popleft()
        t0, n0 = self._points[0]
        return (n - n0) / (t - t0) if t > t0 else 0.0


class Progress:
    """Shows a run's progress while it lasts; use as `async with Progress(...):`."""

    def __init__(
        self,
        stats: RunStats,
        keys: Callable[[], tuple[KeyStats, ...]],
        clock: Clock,
        *,
        mode: Mode = "auto",
        stream: TextIO | None = None,
        plain_every_s: float = 10.0,
        details: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._stats = stats
        self._details = details
        self._keys = keys
        self._clock = clock
        self._stream = stream or sys.stderr
        self._mode = resolve_mode(mode, self._stream)
        self._every = plain_every_s
        self._rate = _Rate()
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._notebook: _NotebookView | None = None
        self._console = Console(file=self._stream, highlight=False)

    async def __aenter__(self) -> Progress:
        self._rate.update(self._clock.now(), 0)  # so even the first line has a rate
        if self._mode == "rich":
            self._live = Live(
                self._render(), console=self._console, refresh_per_second=4, transient=False
            )
            self._live.start()
            self._task = asyncio.ensure_future(self._loop(0.25))
        elif self._mode == "notebook":
            self._notebook = _NotebookView(self._render())
            self._task = asyncio.ensure_future(self._loop(0.5))
        elif self._mode == "plain":
            self._task = asyncio.ensure_future(self._loop(self._every))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._flush_notices()
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
        elif self._notebook is not None:
            self._notebook.update(self._render())
        elif self._mode == "plain":
            self._print_line()

    async def _loop(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self._flush_notices()
            if self._live is not None:
                self._live.update(self._render())
            elif self._notebook is not None:
                self._notebook.update(self._render())
            else:
                self._print_line()

    def _flush_notices(self) -> None:
        for msg in self._stats.take_notices():
            if self._live is not None:
                self._live.console.print(Text(f"! {msg}", style="yellow"))
            elif self._mode != "off":
                print(f"squall: {msg}", file=self._stream, flush=True)

    def _numbers(self) -> tuple[Snapshot, float, float | None]:
        now = self._clock.now()
        snap = self._stats.statistics(now)
        # Not `elapsed_s`: it jumps back when the engine sets its start time after the
        # display has begun, which froze the rate at 0.
        rate = self._rate.update(now, snap.done + snap.failed)
        left = snap.total - snap.done_before - snap.done - snap.failed
        eta = left / rate if rate > 0 else None
        return snap, rate, eta

    def line(self) -> str:
        """Return one plain progress line."""
        snap, rate, eta = self._numbers()
        finished = snap.done_before + snap.done
        errs = ", ".join(f"{k} {v}" for k, v in sorted(snap.errors.items())) or "none"
        pct = 100.0 * finished / snap.total if snap.total else 100.0
        return (
            f"squall: {finished}/{snap.total} done ({pct:.1f}%), {snap.failed} failed, "
            f"{rate:.1f}/s, ETA {_fmt_eta(eta)}, in flight {snap.in_flight}, "
            f"tokens {snap.prompt_tokens}+{snap.completion_tokens}, errors: {errs}"
            + (f", stopping: {snap.stopping}" if snap.stopping else "")
        )

    def _print_line(self) -> None:
        print(self.line(), file=self._stream, flush=True)
        for extra in self._details() if self._details else ():
            print(f"squall:   {extra}", file=self._stream, flush=True)

    def _render(self) -> RenderableType:
        snap, rate, eta = self._numbers()
        finished = snap.done_before + snap.done
        head = Table.grid(padding=(0, 1))
        head.add_row(
            ProgressBar(total=max(snap.total, 1), completed=finished + snap.failed, width=40),
            Text(f"{finished}/{snap.total}", style="bold"),
            Text(f"{rate:.1f}/s", style="cyan"),
            Text(f"ETA {_fmt_eta(eta)}"),
        )
        info = Text.assemble(
            (f"failed {snap.failed}", "red" if snap.failed else "dim"),
            f"  retries {snap.retries}  in flight {snap.in_flight}  ",
            f"tokens {snap.prompt_tokens:,} in / {snap.completion_tokens:,} out",
            f"  ${snap.cost:.4f}" if snap.cost else "",
        )
        parts: list[RenderableType] = [head, info]
        if snap.errors:
            parts.append(
                Text(
                    "errors: " + ", ".join(f"{k} {v}" for k, v in sorted(snap.errors.items())),
                    style="yellow",
                )
            )
        keys = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for col in ("key", "state", "rate", "limit", "in flight", "ok", "429", "err"):
            keys.add_column(col, justify="left" if col in ("key", "state") else "right")
        colour = {
            KeyState.ACTIVE: "green",
            KeyState.COOLING: "yellow",
            KeyState.RESTING: "magenta",
            KeyState.DEAD: "red",
        }
        for k in self._keys():
            limit = "auto" if k.discovering else "-" if k.rpm is None else f"{k.rpm / 60:.1f}/s"
            if k.discovering and k.rpm is not None:
                limit = f"~{k.rpm / 60:.1f}/s?"
            keys.add_row(
                f"{k.label} ({k.masked_key})",
                Text(k.state.value, style=colour[k.state]),
                f"{k.rate_now:.1f}/s",
                limit,
                f"{k.in_flight}/{k.window}" if k.window else str(k.in_flight),
                str(k.ok),
                str(k.rate_limited),
                str(k.errors),
            )
        if keys.row_count:
            parts.append(keys)
        for extra in self._details() if self._details else ():
            parts.append(Text(extra, style="cyan"))
        if snap.stopping:
            parts.append(Text(f"stopping: {snap.stopping}", style="yellow"))
        return Group(*parts)
