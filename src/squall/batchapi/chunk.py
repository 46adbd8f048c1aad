"""One chunk's way through the provider's Batch API: upload, create, poll, download, collect.

`advance` takes a chunk from wherever the journal says it stands to collected, recording
each step before the next call (see `squall.journal.batches`):

    assigned   write the file (again: it may be partial), upload it, record the file id
    uploaded   look for a batch this run made from it (the process may have died during
               the create call); else create one; record the batch id
    submitted  poll until the batch ends, recording its status and counts
    ended      download its output and error files, journal every line, release its rows

A stop request (Ctrl-C) is honoured between steps: whatever was recorded is resumed by the
next run, and a live batch goes on at the provider meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BatchAPIError, RequestError, RetryableError
from ..events import RunStats
from ..journal import BatchRecord, Journal, StoredRequest
from ..journal.batches import UPLOADED
from ..operations import Operation
from ..records import BATCH_SUFFIX, ErrorInfo
from .client import BatchClient, BatchInfo
from .lines import read_results, write_chunk

POLL_BACKOFF = 1.5
"""Each poll that finds nothing changed waits this much longer, up to 10x `poll_s`."""


@dataclass
class ChunkContext:
    """What every chunk of a run shares: the journal, the clients, the settings.

    Attributes:
        jr: the run's journal.
        clients: a client per key id (the chunk's `label`).
        models: the model each key's endpoint is sent, by key id.
        operation: the request kind; kind: its batch url.
        run_id: the journal's id in the batches' metadata.
        workdir: where batch files are written and downloaded.
        poll_s: seconds between polls.
        keep_raw: keep each answer's body (batch-lines output).
        redact: removes secrets from text.
        stats: the live counters.
        cost: the cost of an answer (model, prompt, completion tokens), at batch prices.
        stop: set when the run is to stop (Ctrl-C): chunks stop between steps.
        seen: each chunk's latest Batch object this run, for the display.
    """

    jr: Journal
    clients: Mapping[str, BatchClient]
    models: Mapping[str, str]
    operation: Operation
    kind: str
    run_id: str
    workdir: Path
    poll_s: float
    keep_raw: bool
    redact: Callable[[str], str]
    stats: RunStats
    cost: Callable[[str, int, int], float]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    seen: dict[int, BatchInfo] = field(default_factory=dict)

    def metadata(self, chunk: int) -> dict[str, str]:
        """Return the metadata that names chunk `chunk` of this run at the provider."""
        return {"squall_run": self.run_id, "squall_chunk": str(chunk)}

    def model_of(self, label: str) -> Callable[[StoredRequest], str]:
        """Return the model a line of a chunk sent with key `label` asks for."""
        default = self.models[label]
        return lambda spec: spec.row_model or default


def _record(ctx: ChunkContext, chunk: int) -> BatchRecord:
    for rec in ctx.jr.batches.records():
        if rec.chunk == chunk:
            return rec
    raise AssertionError(f"chunk {chunk} is not in the journal")


async def _submit(ctx: ChunkContext, rec: BatchRecord, client: BatchClient) -> BatchRecord:
    """Upload the chunk's file and create its batch, unless the provider has it already."""
    batches = ctx.jr.batches
    if rec.status == UPLOADED:
        # Recorded as uploaded but with no batch: the process may have died during the create
        # call, after the provider made the batch. Adopt it rather than pay twice.
        found = await client.find(ctx.metadata(rec.chunk), newer_than=rec.created_at - 3600)
        if found is not None:
            batches.set_batch(rec.chunk, found.id, found.status)
            ctx.stats.notice(f"batch {rec.chunk}: found {found.id} at the provider, adopted")
            return _record(ctx, rec.chunk)
    try:
        file_id = rec.file_id or await _upload(ctx, rec, client)
        if file_id is None or ctx.stop.is_set():
            return _record(ctx, rec.chunk)
        info = await client.create(file_id, ctx.kind, ctx.metadata(rec.chunk))
    except BatchAPIError as exc:
        if not exc.retryable:
            # Refused for good (a wrong key, no Batch API there): no batch was made, so the
            # rows are freed for another key, a later run, or an online run.
            batches.set_status(rec.chunk, "refused", completed=0, failed=0, errors=[str(exc)])
            batches.release(rec.chunk)
        raise
    batches.set_batch(rec.chunk, info.id, info.status)
    ctx.seen[rec.chunk] = info
    return _record(ctx, rec.chunk)


async def _upload(ctx: ChunkContext, rec: BatchRecord, client: BatchClient) -> str | None:
    """Upload the chunk's file (written again unless it is whole); None if the run stops."""
    path = ctx.workdir / f"chunk-{rec.chunk}.jsonl"
    nbytes = rec.bytes
    if nbytes is None or not path.exists() or path.stat().st_size != nbytes:
        specs = ctx.jr.batches.requests_of(rec.chunk)
        _, nbytes = write_chunk(path, specs, ctx.kind, ctx.model_of(rec.label))
        ctx.jr.batches.set_file(rec.chunk, nbytes=nbytes, file_id=None)
    if ctx.stop.is_set():
        return None
    file_id = await client.upload(path, filename=f"squall-{ctx.run_id}-{rec.chunk}.jsonl")
    ctx.jr.batches.set_file(rec.chunk, nbytes=nbytes, file_id=file_id)
    with contextlib.suppress(OSError):
        path.unlink()
    return file_id


async def _poll(ctx: ChunkContext, rec: BatchRecord, client: BatchClient) -> BatchInfo | None:
    """Poll the chunk's batch until it ends; None if the run stops first."""
    assert rec.batch_id is not None
    interval = ctx.poll_s
    last: tuple[object, ...] | None = None
    while True:
        try:
            info = await client.get(rec.batch_id)
        except BatchAPIError as exc:
            if not exc.retryable:
                raise
            # The batch goes on at the provider while it cannot be reached: keep polling.
            ctx.stats.notice(f"batch {rec.chunk}: polling failed ({exc}); trying again")
            interval = min(interval * 2, ctx.poll_s * 10)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.stop.wait(), timeout=interval)
            if ctx.stop.is_set():
                return None
            continue
        ctx.seen[rec.chunk] = info
        now = (info.status, info.request_counts)
        if now != last:
            counts = info.request_counts
            ctx.jr.batches.set_status(
                rec.chunk,
                info.status,
                completed=counts.completed,
                failed=counts.failed,
                output_file_id=info.output_file_id,
                error_file_id=info.error_file_id,
                errors=info.errors,
            )
            interval = ctx.poll_s
        else:
            interval = min(interval * POLL_BACKOFF, ctx.poll_s * 10)
        last = now
        if info.terminal:
            return info
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ctx.stop.wait(), timeout=interval)
        if ctx.stop.is_set():
            return None


def _error_info(error: RequestError) -> ErrorInfo:
    return ErrorInfo(error.kind, error.status, error.message)


async def _collect(
    ctx: ChunkContext, rec: BatchRecord, info: BatchInfo, client: BatchClient
) -> None:
    """Download the batch's files, journal each line, and release the chunk's rows."""
    files: list[Path] = []
    for name, file_id in (("output", info.output_file_id), ("errors", info.error_file_id)):
        if file_id:
            path = ctx.workdir / f"chunk-{rec.chunk}.{name}.jsonl"
            await client.download(file_id, path)
            files.append(path)
    jr, stats = ctx.jr, ctx.stats
    held = set(jr.batches.rows_of(rec.chunk))
    endpoint = rec.endpoint + BATCH_SUFFIX
    model_of = ctx.model_of(rec.label)
    models = {s.index: model_of(s) for s in jr.batches.requests_of(rec.chunk)}
    latency = max(0.0, time.time() - rec.created_at)
    unrun = 0
    for path in files:
        for res in read_results(path, ctx.operation, keep_raw=ctx.keep_raw, redact=ctx.redact):
            if res.index not in held:
                continue  # an answer for a row this chunk does not hold (answered twice)
            held.discard(res.index)
            if res.unexecuted:
                unrun += 1
            elif res.completion is not None:
                c = res.completion
                model = models.get(res.index, ctx.models[rec.label])
                jr.record_success(
                    res.index, c, latency_s=latency, attempts=1, endpoint=endpoint, model=model
                )
                stats.done += 1
                stats.prompt_tokens += c.prompt_tokens or 0
                stats.completion_tokens += c.completion_tokens or 0
                stats.cost += ctx.cost(model, c.prompt_tokens or 0, c.completion_tokens or 0)
            elif res.error is not None:
                stats.errors[res.error.kind] += 1
                if isinstance(res.error, RetryableError):
                    jr.record_retry(res.index, _error_info(res.error))
                    stats.retries += 1
                else:
                    jr.record_failure(
                        res.index,
                        _error_info(res.error),
                        attempts=1,
                        endpoint=endpoint,
                        retryable=False,
                    )
                    stats.failed += 1
    jr.batches.release(rec.chunk)  # commits the answers and the release together
    for path in files:
        with contextlib.suppress(OSError):
            path.unlink()
    left = unrun + len(held)  # never run (expired, cancelled), or absent from both files
    if left:
        stats.notice(
            f"batch {rec.chunk} ({info.status}): {left} of its rows were not answered and are "
            "to do again"
        )


async def advance(ctx: ChunkContext, chunk: int) -> BatchRecord:
    """Take chunk `chunk` as far as it goes: to collected, or to where the run stopped.

    Returns the chunk's record as it then stands.

    Raises:
        BatchAPIError: the provider refused a step (the message says which and why); what
            was recorded before it stays, and the next run resumes from there.
    """
    rec = _record(ctx, chunk)
    client = ctx.clients.get(rec.label)
    if client is None:
        raise BatchAPIError(
            f"batch {chunk} was made with the key {rec.label!r} of endpoint {rec.endpoint!r}, "
            "which the config no longer has: add the key back to collect it",
            status=None,
            retryable=False,
        )
    if not rec.live:
        return rec
    if rec.batch_id is None:
        rec = await _submit(ctx, rec, client)
        if rec.batch_id is None or ctx.stop.is_set():
            return rec
    info = await _poll(ctx, rec, client)
    if info is None:
        return _record(ctx, chunk)
    await _collect(ctx, _record(ctx, chunk), info, client)
    return _record(ctx, chunk)
