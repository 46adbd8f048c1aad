"""A run through the provider's Batch API: the chunks it makes, follows and collects.

`BatchDriver.run` goes in passes. Each pass first takes up the journal's live chunks (made
by an earlier run that stopped or died: they are resumed, never made again), then writes the
rows still to do into new chunks of at most `batch_max_requests` lines and
`batch_max_bytes` bytes, each given to the key whose account holds the fewest live rows
(so batches spread over the keys), and advances every chunk at once (`chunk.advance`). A
pass ends when all its chunks are collected. Rows a batch left unanswered (it expired,
failed or was cancelled) or whose line failed with a transient error are submitted again in
the next pass, at most `MAX_PASSES` a run; with `batch_fallback = "online"` the passes end
at the first batch that ended unfinished, and the runner sends what is left online.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from ..errors import BatchAPIError, SquallError
from ..events import RunStats
from ..journal import BatchRecord, Journal, StoredRequest
from ..operations import Operation
from .chunk import ChunkContext, advance
from .client import BatchClient
from .lines import ChunkFile, line_bytes

MAX_PASSES = 3
"""Passes in one run: rows a batch left unfinished are submitted again at most this often."""
UNFINISHED = frozenset({"expired", "failed", "cancelled"})
"""How a batch may end with rows it never answered (they are to do again)."""


@dataclass(frozen=True, slots=True)
class BatchKey:
    """One key a run may make batches with: where, as whom, and for which model.

    Attributes:
        key_id: the key's id in the config (`pool.iter_keys`), recorded on each chunk.
        endpoint: its endpoint's name.
        base_url: the endpoint's base URL (ends in /v1).
        headers: the request headers, Authorization included (never logged).
        model: the model its endpoint is sent.
        timeout_s: the endpoint's request timeout.
    """

    key_id: str
    endpoint: str
    base_url: str
    headers: dict[str, str]
    model: str
    timeout_s: float

    def __repr__(self) -> str:
        return f"BatchKey({self.key_id!r}, endpoint={self.endpoint!r})"


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The Batch API settings of a run (from `RunConfig.batch_*`)."""

    poll_s: float
    max_requests: int
    max_bytes: int
    keep_raw: bool


class BatchDriver:
    """Runs the rows still to do through the provider's Batch API, over every key.

    Args:
        jr: the run's journal (open, ingested).
        keys: the keys to make batches with (at least one).
        operation: the request kind of every row.
        settings: polling and file limits.
        stats: the live counters (the display reads them).
        redact: removes secrets from text.
        cost: what an answer costs at batch prices (model, prompt, completion tokens).
        budget: returns whether a chunk of rows whose estimated cost is given may still be
            made (the --max-cost check); None: no cap.
        workdir: where batch files are written and downloaded (next to the journal).
        fallback_online: end the passes at the first batch that ends unfinished (the runner
            then sends the rows left online).
    """

    def __init__(
        self,
        jr: Journal,
        *,
        keys: Sequence[BatchKey],
        operation: Operation,
        settings: BatchSettings,
        stats: RunStats,
        redact: Callable[[str], str],
        cost: Callable[[str, int, int], float],
        estimate: Callable[[StoredRequest], float] | None,
        budget: Callable[[float], bool] | None,
        workdir: Path,
        fallback_online: bool = False,
    ) -> None:
        self._jr = jr
        self._fallback_online = fallback_online
        self._keys = {k.key_id: k for k in keys}
        self._op = operation
        self._settings = settings
        self._stats = stats
        self._redact = redact
        self._cost = cost
        self._estimate = estimate
        self._budget = budget
        self._workdir = workdir
        self._stop = asyncio.Event()
        self._reason: str | None = None
        self._capped: str | None = None
        self._tasks: set[asyncio.Task[BatchRecord]] = set()
        self._ctx: ChunkContext | None = None
        self.unfinished: list[BatchRecord] = []
        """Chunks that ended expired, failed or cancelled this run."""

    # -- control (Ctrl-C, as the engine's) -----------------------------------------------------

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop making and following batches; the live ones go on at the provider."""
        if self._reason is None:
            self._reason = reason
            self._stats.stopping = reason
        self._stop.set()

    def cut(self) -> None:
        """Stop at once: the calls in progress are abandoned (each step is journaled)."""
        self._stop.set()
        for t in list(self._tasks):
            t.cancel()

    # -- the display -------------------------------------------------------------------------

    def lines(self) -> list[str]:
        """Return one line per batch of this run, for the live display."""
        ctx = self._ctx
        if ctx is None:
            return []
        out = []
        for rec in self._jr.batches.records(live_only=True)[-20:]:
            info = ctx.seen.get(rec.chunk)
            status = info.status if info else rec.status
            counts = info.request_counts if info else None
            done = f"{counts.completed}/{counts.total}" if counts else f"0/{rec.rows}"
            failed = f", {counts.failed} failed" if counts and counts.failed else ""
            ident = rec.batch_id or rec.file_id or "not uploaded"
            out.append(f"batch {rec.chunk} [{rec.label}] {ident}: {status} {done}{failed}")
        return out

    # -- the run -----------------------------------------------------------------------------

    async def run(self, todo: Callable[[], Iterator[StoredRequest]]) -> tuple[str, str | None]:
        """Send what `todo` yields through batches; return (status, reason) as the engine does.

        `todo` is called once per pass: it yields the rows still to do that no live chunk
        holds (the journal's rows to send).

        Raises:
            BatchAPIError: a provider refused a step for good (the message says which);
                everything recorded before it is kept, and the next run resumes.
        """
        self._workdir.mkdir(parents=True, exist_ok=True)
        async with aiohttp.ClientSession() as session:
            self._ctx = ctx = ChunkContext(
                jr=self._jr,
                clients={
                    k.key_id: BatchClient(
                        session,
                        k.base_url,
                        k.headers,
                        redact=self._redact,
                        timeout_s=max(k.timeout_s, 600.0),
                    )
                    for k in self._keys.values()
                },
                models={k.key_id: k.model for k in self._keys.values()},
                operation=self._op,
                kind=self._op.batch_url,
                run_id=self._jr.batches.run_id(),
                workdir=self._workdir,
                poll_s=self._settings.poll_s,
                keep_raw=self._settings.keep_raw,
                redact=self._redact,
                stats=self._stats,
                cost=self._cost,
                stop=self._stop,
            )
            for _ in range(MAX_PASSES):
                ended = await self._pass(ctx, todo)
                if self._stop.is_set() or self._capped:
                    break
                unfinished = [r for r in ended if r.status in UNFINISHED]
                self.unfinished.extend(unfinished)
                if unfinished and self._fallback_online:
                    break  # the runner sends what they left online
                if next(iter(todo()), None) is None:
                    break
        return self._outcome(todo)

    async def _pass(
        self, ctx: ChunkContext, todo: Callable[[], Iterator[StoredRequest]]
    ) -> list[BatchRecord]:
        """Resume the live chunks, make new ones of what is to do, and wait for them all."""
        for rec in self._jr.batches.records(live_only=True):
            self._start(ctx, rec.chunk)
        if self._tasks:
            self._stats.notice(f"{len(self._tasks)} batch(es) from an earlier run resumed")
        for chunk in self._make_chunks(todo()):
            self._start(ctx, chunk)
            await asyncio.sleep(0)  # let uploads start while the next file is written
            if self._stop.is_set():
                break
        results: list[BatchRecord] = []
        while self._tasks:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                self._tasks.discard(t)
                if t.cancelled():
                    continue
                exc = t.exception()
                if exc is not None and not self._drop_key(exc):
                    self.request_stop(str(exc) if isinstance(exc, SquallError) else "error")
                    self._drain()
                    raise exc
                if exc is None:
                    results.append(t.result())
        return results

    def _drop_key(self, exc: BaseException) -> bool:
        """Take a key the provider refused (401/403) out of rotation, if others remain.

        Its chunk was released (no batch was made), so its rows go to the other keys in the
        next pass. Returns False when this was the last key (the run stops with the error).
        """
        if not isinstance(exc, BatchAPIError) or exc.status not in (401, 403):
            return False
        if self._ctx is None or len(self._keys) < 2:
            return False
        for rec in self._jr.batches.records()[::-1]:
            if rec.status == "refused" and rec.label in self._keys:
                del self._keys[rec.label]
                self._stats.notice(
                    f"key {rec.label!r} was refused by the Batch API ({exc}): its rows go to "
                    "the other keys"
                )
                return True
        return False

    def _drain(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    def _start(self, ctx: ChunkContext, chunk: int) -> None:
        self._tasks.add(asyncio.ensure_future(advance(ctx, chunk)))

    def _pick_key(self) -> BatchKey:
        load = dict.fromkeys(self._keys, 0)
        for rec in self._jr.batches.records(live_only=True):
            if rec.label in load:
                load[rec.label] += rec.rows
        return self._keys[min(load, key=lambda k: load[k])]

    def _make_chunks(self, specs: Iterator[StoredRequest]) -> Iterator[int]:
        """Write the rows of `specs` into chunk files, make each a chunk; yield their numbers."""
        s = self._settings
        pending: StoredRequest | None = None
        while not self._stop.is_set() and self._capped is None:
            key = self._pick_key()
            path = self._workdir / "chunk-new.jsonl"
            chunk = ChunkFile.create(path, max_requests=s.max_requests, max_bytes=s.max_bytes)
            estimate = 0.0
            try:
                # Not a for loop over a chained generator: leaving it early would close
                # `specs` (the journal's pages) with it.
                while (spec := pending or next(specs, None)) is not None:
                    pending = None
                    line = line_bytes(spec, self._op.batch_url, spec.row_model or key.model)
                    if not chunk.fits(line):
                        pending = spec
                        break
                    chunk.add(spec.index, line)
                    if self._estimate is not None:
                        estimate += self._estimate(spec)
            finally:
                chunk.close()
            if not chunk.rows:
                path.unlink(missing_ok=True)
                return
            if self._budget is not None and not self._budget(estimate):
                # No new batch; those made already are still followed and collected.
                path.unlink(missing_ok=True)
                self._capped = (
                    "max cost: the next batch's estimate (at batch prices) would pass --max-cost"
                )
                return
            number = self._jr.batches.assign(
                chunk.rows, endpoint=key.endpoint, label=key.key_id, kind=self._op.batch_url
            )
            self._jr.batches.set_file(number, nbytes=chunk.nbytes, file_id=None)
            with contextlib.suppress(OSError):
                path.replace(self._workdir / f"chunk-{number}.jsonl")
            yield number

    def _outcome(self, todo: Callable[[], Iterator[StoredRequest]]) -> tuple[str, str | None]:
        live = self._jr.batches.records(live_only=True)
        if live:
            why = self._reason or "stopped"
            return (
                "interrupted" if why == "interrupted" else "stopped",
                f"{why}: {len(live)} batch(es) are still live at the provider (they go on "
                "there): run the same command to collect their answers, or cancel them with "
                "`squall batch cancel JOURNAL -c CONFIG`",
            )
        if self._reason is not None:
            return "stopped", self._reason
        if self._capped is not None:
            return "stopped", self._capped
        if next(iter(todo()), None) is None:
            return "completed", None
        names = ", ".join(f"{r.chunk} ({r.status})" for r in self.unfinished[-5:])
        return (
            "stopped",
            f"rows are still to do after {MAX_PASSES} passes"
            + (f"; batch(es) {names} ended unfinished" if names else "")
            + ": run the same command to submit them again, or add --batch-fallback online",
        )


async def cancel_batches(
    jr: Journal, keys: Sequence[BatchKey], redact: Callable[[str], str]
) -> list[str]:
    """Cancel every live batch of the journal at its provider; return a line per batch.

    A chunk with no batch recorded is looked up by its metadata first (a run may have died
    during the create call); one the provider never had is released, its rows to do again.
    """
    by_id = {k.key_id: k for k in keys}
    out: list[str] = []
    run_id = jr.batches.run_id()
    async with aiohttp.ClientSession() as session:
        for rec in jr.batches.records(live_only=True):
            key = by_id.get(rec.label)
            if key is None:
                out.append(f"batch {rec.chunk}: its key {rec.label!r} is not in the config")
                continue
            client = BatchClient(session, key.base_url, key.headers, redact=redact)
            batch_id = rec.batch_id
            if batch_id is None and rec.file_id is not None:
                meta = {"squall_run": run_id, "squall_chunk": str(rec.chunk)}
                found = await client.find(meta, newer_than=rec.created_at - 3600)
                if found is not None:
                    jr.batches.set_batch(rec.chunk, found.id, found.status)
                    batch_id = found.id
            if batch_id is None:
                jr.batches.set_status(rec.chunk, "cancelled", completed=0, failed=0)
                jr.batches.release(rec.chunk)
                out.append(f"batch {rec.chunk}: never submitted; its {rec.rows} rows are to do")
                continue
            try:
                info = await client.cancel(batch_id)
            except BatchAPIError as exc:
                out.append(f"batch {rec.chunk} ({batch_id}): not cancelled: {exc}")
                continue
            counts = info.request_counts
            jr.batches.set_status(
                rec.chunk, info.status, completed=counts.completed, failed=counts.failed
            )
            out.append(
                f"batch {rec.chunk} ({batch_id}): {info.status}; the next run collects what it "
                "answered and leaves the rest to do"
            )
    return out
