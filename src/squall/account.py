"""The account of a run: done, failed and why, requests, retries, keys, tokens, cost, time.

Built from the journal's totals over every session (so `squall status JOURNAL` prints the same
thing for a run that ended long ago): requests and retries are counted per row, and each key's
counters are those every session recorded at its end (`Journal.end_session(outcome, keys)`).
A journal that lacks them (older than schema 3, or no session recorded its keys) falls back to
this session's live counters and key snapshots, when there are some.

`summarize()` builds the account from a journal's statistics; `run_status()` says what state
the journal's last run is in; `status_summary()` does both for a journal file, read-only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .config import Price
from .events import KeyStats, RunStats
from .journal import Journal, JournalStats, KeyTotals
from .records import BATCH_SUFFIX


@dataclass(frozen=True, slots=True)
class Failure:
    """One reason rows failed: how many, and the row numbers (1-based) of a few."""

    reason: str
    count: int
    example_rows: tuple[int, ...]


def cost_of(
    prices: Mapping[str, Price], model: str | None, prompt_tokens: int, completion_tokens: int
) -> float | None:
    """Return the USD cost of these tokens on `model`, or None when [prices] lacks it."""
    if model is None or model not in prices:
        return None
    p = prices[model]
    return (prompt_tokens * p.input + completion_tokens * p.output) / 1_000_000


@dataclass(frozen=True)
class Summary:
    """A run's account. `str(summary)` is the plain-text version."""

    status: str
    """completed, interrupted, stopped, dry-run, or unknown (for `squall status`)."""
    total: int
    done: int
    failed: int
    pending: int
    failures: tuple[Failure, ...] = ()
    reason: str | None = None
    requests_sent: int = 0
    """Requests sent, over every session."""
    retries: int = 0
    """Requests sent again after a retryable error, over every session the journal counted."""
    in_flight_at_crash: int = 0
    """Rows found marked sent but unanswered when the journal was opened: may have been billed."""
    in_flight: int = 0
    """Rows sent and unanswered now: a live run's requests (set by `status_summary`)."""
    cut_in_flight: int = 0
    """Requests still in flight when this session's grace ran out."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    wall_s: float | None = None
    done_this_session: int = 0
    keys: tuple[KeyStats, ...] = ()
    """Each key: its counters over every session that recorded them; at the end of a run,
    this session's snapshot of the rest (state, limits, window)."""
    journal: str | None = None
    output: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    preview: tuple[str, ...] = ()
    """For a dry run: the first few requests, as they would be sent."""

    @property
    def rate(self) -> float | None:
        """Rows done per second in this session."""
        if not self.wall_s or self.wall_s <= 0:
            return None
        return self.done_this_session / self.wall_s

    @property
    def complete(self) -> bool:
        """True when every row is done."""
        return self.done == self.total

    @property
    def _why(self) -> str:
        # "interrupted (interrupted)" says nothing twice.
        return f" ({self.reason})" if self.reason and self.reason != self.status else ""

    def lines(self) -> list[str]:
        """Return the account as plain lines."""
        out = [
            f"status: {self.status}{self._why}",
            f"rows: {self.total} total, {self.done} done, {self.failed} failed, "
            f"{self.pending} pending",
        ]
        for f in self.failures:
            rows = ", ".join(str(r) for r in f.example_rows)
            out.append(f"  failed {f.count} x {f.reason}" + (f" (rows {rows})" if rows else ""))
        out.append(f"requests sent: {self.requests_sent}, retries: {self.retries}")
        if self.in_flight_at_crash:
            out.append(
                f"in flight at the last crash or kill: {self.in_flight_at_crash} "
                "(sent, never answered: they may have been billed, and were sent again)"
            )
        if self.cut_in_flight:
            out.append(f"in flight when stopped: {self.cut_in_flight} (may have been billed)")
        out.append(f"tokens: {self.prompt_tokens} in, {self.completion_tokens} out")
        out.append(
            "cost: " + (f"${self.cost:.4f}" if self.cost is not None else "unknown (add [prices])")
        )
        if self.wall_s is not None:
            rate = self.rate
            out.append(
                f"time: {self.wall_s:.1f}s"
                + (f", {rate:.1f} rows/s this session" if rate is not None else "")
            )
        for k in self.keys:
            out.append(
                f"  {k.label} ({k.masked_key}): {k.sent} sent, {k.ok} ok, "
                f"{k.rate_limited} x 429, {k.errors} errors, {k.state.value}"
            )
        out.extend(self.preview)
        if self.output:
            out.append(f"output: {self.output}")
        if self.journal:
            out.append(f"journal: {self.journal}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def __rich__(self) -> RenderableType:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        style = {"completed": "green", "interrupted": "yellow", "stopped": "yellow"}.get(
            self.status, "white"
        )
        table.add_row("status", Text(self.status, style=style) + Text(self._why))
        table.add_row(
            "rows",
            f"{self.total} total, [green]{self.done} done[/], "
            f"[red]{self.failed} failed[/], {self.pending} pending",
        )
        for f in self.failures:
            rows = ", ".join(str(r) for r in f.example_rows)
            table.add_row(
                "", f"[red]{f.count} x {f.reason}[/]" + (f" (rows {rows})" if rows else "")
            )
        table.add_row("requests", f"{self.requests_sent} sent, {self.retries} retries")
        if self.in_flight_at_crash or self.cut_in_flight:
            table.add_row(
                "in flight",
                f"{self.in_flight_at_crash} at the last crash, {self.cut_in_flight} cut now "
                "(may have been billed)",
            )
        table.add_row("tokens", f"{self.prompt_tokens:,} in, {self.completion_tokens:,} out")
        table.add_row(
            "cost", f"${self.cost:.4f}" if self.cost is not None else "unknown (add \\[prices])"
        )
        if self.wall_s is not None:
            rate = self.rate
            table.add_row("time", f"{self.wall_s:.1f}s" + (f", {rate:.1f} rows/s" if rate else ""))
        parts: list[RenderableType] = [table]
        if self.keys:
            parts.append(key_table(self.keys))
        for p in self.preview:
            parts.append(Text(p))
        if self.output:
            parts.append(Text(f"output: {self.output}"))
        if self.journal:
            parts.append(Text(f"journal: {self.journal}"))
        return Group(*parts)


def key_table(keys: Sequence[KeyStats]) -> Table:
    """Return the account's table of keys: sent, ok, 429, errors and state of each."""
    table = Table(box=None, padding=(0, 1), show_edge=False)
    counts = ("sent", "ok", "429", "errors")
    for col in ("key", *counts, "state"):
        table.add_column(col, justify="right" if col in counts else "left")
    for k in keys:
        table.add_row(
            f"{k.label} ({k.masked_key})",
            str(k.sent),
            str(k.ok),
            str(k.rate_limited),
            str(k.errors),
            k.state.value,
        )
    return table


def key_json(key: KeyStats) -> dict[str, Any]:
    """Return one key's line of the account as `squall status --json` prints it."""
    return {
        "label": key.label,
        "endpoint": key.endpoint,
        "masked_key": key.masked_key,
        "sent": key.sent,
        "ok": key.ok,
        "rate_limited": key.rate_limited,
        "errors": key.errors,
        "state": key.state.value,
    }


def account_keys(totals: Sequence[KeyTotals], live: Sequence[KeyStats]) -> tuple[KeyStats, ...]:
    """Return the account's keys, with their counters over every session.

    First the journal's, in the order it first recorded them, then the keys of `live` it
    holds none for.

    A key of `live` (this session's snapshot, recorded already) keeps its state, limits and
    window, and takes the journal's counters; a key only the journal knows is listed as its
    latest session left it, with nothing in flight.
    """
    by_id = {(k.endpoint, k.label): k for k in live}
    out = []
    for t in totals:
        snap = by_id.pop((t.endpoint, t.label), None)
        if snap is None:
            snap = KeyStats(
                label=t.label,
                endpoint=t.endpoint,
                masked_key=t.masked_key,
                state=t.state,
                in_flight=0,
                sent=0,
                ok=0,
                rate_limited=0,
                errors=0,
                rpm=None,
                tpm=None,
                discovering=False,
                rate_now=0.0,
            )
        out.append(
            dataclasses.replace(
                snap, sent=t.sent, ok=t.ok, rate_limited=t.rate_limited, errors=t.errors
            )
        )
    return (*out, *by_id.values())


def failures_from(by_reason: Mapping[str, tuple[int, Sequence[int]]]) -> tuple[Failure, ...]:
    """Return Failure entries, most frequent first, from {reason: (count, 0-based rows)}."""
    items = sorted(by_reason.items(), key=lambda kv: -kv[1][0])
    return tuple(Failure(r, c, tuple(i + 1 for i in rows[:5])) for r, (c, rows) in items)


@dataclass(frozen=True, slots=True)
class RunStatus:
    """What state a journal's last run is in, and why (None when there is nothing to add)."""

    status: str
    """completed, stopped, interrupted or running; unknown when no run ever began."""
    reason: str | None = None


def run_status(stats: JournalStats, last_stop_reason: str | None, *, live: bool) -> RunStatus:
    """Return the state of the journal's last run.

    Args:
        stats: the journal's statistics (its sessions and the rows SENT now).
        last_stop_reason: why the last run stopped, as it recorded it ("" or None: no reason).
        live: whether a run holds the journal now (`Journal.in_use_elsewhere()`).
    """
    last = stats.sessions[-1] if stats.sessions else None
    if last is None:
        return RunStatus("unknown")
    if last.outcome is None and live:
        return RunStatus("running", f"pid {last.pid}; {stats.sent} request(s) in flight now")
    if last.outcome is None:
        return RunStatus(
            "interrupted",
            f"its process died (kill -9, crash) with {stats.sent} request(s) in flight: "
            "they may have been billed, and are sent again on resume",
        )
    if last.outcome == "completed":
        return RunStatus("completed")
    return RunStatus(last.outcome, last_stop_reason or None)


def summarize(
    stats: JournalStats,
    cfg_prices: Mapping[str, Price],
    models_by_endpoint: Mapping[str, str],
    *,
    status: str,
    reason: str | None = None,
    run: RunStats | None = None,
    keys: Sequence[KeyStats] = (),
    wall_s: float | None = None,
    cut: int = 0,
    journal: Path | None = None,
    output: Path | None = None,
) -> Summary:
    """Return the account of a journal (plus this session's counters when given).

    Requests, retries and each key's counters are the journal's, over every session, where it
    has them: at the end of a run, record the session's keys first
    (`Journal.end_session(outcome, keys)`), then read `statistics()` and pass the same `keys`,
    and the account counts what `squall status` prints. A key of `keys` keeps its snapshot
    (state, limits, window) with the journal's counters; a key only earlier sessions knew is
    listed from the journal. Where the journal counted no retries (older than schema 3) they
    are `run.retries`; a key it holds no counters for shows its snapshot's (this session's).

    The cost is None ("unknown") when an endpoint's model has no price, or nothing was
    answered and there is no price table at all.
    """
    return Summary(
        status=status,
        reason=reason,
        total=stats.total,
        done=stats.done,
        failed=stats.failed,
        pending=stats.total - stats.done - stats.failed,
        failures=failures_from({k: (v.count, v.rows) for k, v in stats.failures.items()}),
        requests_sent=stats.requests_sent,
        retries=stats.retries if stats.retries is not None else run.retries if run else 0,
        in_flight_at_crash=stats.in_flight_at_open,
        cut_in_flight=cut,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        cost=_journal_cost(stats, cfg_prices, models_by_endpoint),
        wall_s=wall_s if wall_s is not None else stats.wall_s,
        done_this_session=run.done if run else stats.done,
        keys=account_keys(stats.keys, keys),
        journal=str(journal) if journal else None,
        output=str(output) if output else None,
    )


def _journal_cost(
    stats: JournalStats, prices: Mapping[str, Price], models_by_endpoint: Mapping[str, str]
) -> float | None:
    if not stats.tokens_by_endpoint and not prices:
        return None
    cost = 0.0
    for ep, usage in stats.tokens_by_endpoint.items():
        name = ep.removesuffix(BATCH_SUFFIX)
        model = models_by_endpoint.get(name)
        c = cost_of(prices, model, usage.prompt_tokens, usage.completion_tokens)
        if c is None:
            return None
        if name != ep and model is not None:
            c *= prices[model].batch  # answered through the Batch API
        cost += c
    return cost


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a run left in its journal's meta: its endpoints' models, prices and last stop."""

    models: dict[str, str]
    """Model name by endpoint name."""
    prices: dict[str, Price]
    last_stop_reason: str | None


def read_run_record(jr: Journal) -> RunRecord:
    """Return the models, prices and last stop reason a run stored in `jr` (empty if none).

    Raises:
        JournalError: the journal cannot be read.
    """
    meta = jr.run_meta()  # typed, and read from the same keys older squalls wrote
    return RunRecord(
        models=dict(meta.models),
        prices={k: Price(**v.as_dict()) for k, v in meta.prices.items()},
        last_stop_reason=meta.last_stop_reason,
    )


def status_summary(journal_path: Path) -> Summary:
    """Return the account of the journal at `journal_path`, opened read-only.

    Works while a run writes to it: then the status is "running", `in_flight` counts its
    requests in flight and `in_flight_at_crash` is 0 (what is in flight is no crash's).

    Raises:
        JournalError: no journal there, or not a readable squall journal.
    """
    with Journal.open(journal_path, read_only=True) as jr:
        stats = jr.statistics()
        live = jr.in_use_elsewhere()
        record = read_run_record(jr)
    state = run_status(stats, record.last_stop_reason, live=live)
    summary = summarize(
        stats,
        record.prices,
        record.models,
        status=state.status,
        reason=state.reason,
        journal=journal_path,
    )
    return dataclasses.replace(
        summary,
        in_flight=stats.sent,
        in_flight_at_crash=0 if live else summary.in_flight_at_crash,
    )
