"""One batch and its run: validating -> in_progress -> finalizing -> completed, or not.

`Batch` holds a batch's state and answers as OpenAI's Batch object (`to_dict`). `run_batch`
is the task that moves it along, pacing itself by `SimConfig.batches` (scaled by its
`time_scale`): `validating_s`, then its lines are checked (bad ones fail the batch with
`errors`), then each line takes `line_s` and is answered as online (`batchlines.answer_line`),
then `finalizing_s`, then its files are written (successes to the output file, others to the
error file, each shuffled) and it is "completed". A cancel request makes it "cancelling" for
`cancelling_s`, then "cancelled"; a batch still running `expire_after_s` after its creation
ends "expired". Either way the lines answered so far are in its output (or error) file and
the rest are in its error file, failed with batch_cancelled or batch_expired (and counted in
`request_counts.failed`, so a finished batch always has `completed + failed == total`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from .batchlines import (
    CANCELLED,
    EXPIRED,
    Line,
    answer_line,
    check_lines,
    output_line,
    unexecuted_line,
)
from .files import FileStore
from .ledger import Ledger, LedgerEntry
from .settings import SimConfig

FAILED_BY_FAULT = {
    "code": "simulated_failure",
    "message": "The batch failed: a fault the simulator was asked to inject.",
    "param": None,
    "line": None,
}
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class Batch:
    """One batch's state (touched only on the simulator's loop)."""

    def __init__(
        self,
        batch_id: str,
        owner: str,
        masked: str,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
        expire_after_s: float,
    ) -> None:
        self.id = batch_id
        self.owner = owner
        self.masked = masked
        self.input_file_id = input_file_id
        self.endpoint = endpoint
        self.metadata = metadata
        self.status = "validating"
        created = int(time.time())
        self.times: dict[str, int | None] = {"created_at": created}
        self.expires_at = created + int(expire_after_s)
        self.total = self.completed = self.failed = 0
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.errors: list[dict[str, Any]] | None = None
        self.cancel_requested = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def move(self, status: str) -> None:
        """Enter `status`, stamping its `<status>_at` time."""
        self.status = status
        self.times[f"{status}_at"] = int(time.time())

    def to_dict(self) -> dict[str, Any]:
        """Return the Batch object OpenAI answers for this batch."""
        stamp = self.times.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": stamp("created_at"),
            "in_progress_at": stamp("in_progress_at"),
            "expires_at": self.expires_at,
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


class Runner:
    """What running a batch needs: the config, the files, the ledger, the answer counter."""

    def __init__(
        self, config: SimConfig, files: FileStore, ledger: Ledger, number: Callable[[], int]
    ) -> None:
        self.config = config
        self.settings = config.batches
        self.files = files
        self.ledger = ledger
        self.number = number

    async def run(self, batch: Batch, data: bytes, fail: bool) -> None:
        """Move `batch` to its end: the task created for each batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.seconds(self.settings.expire_after_s)
        outcome = await self._wait(batch, self.settings.validating_s, deadline)
        if outcome:
            await self._stop(batch, outcome, [], [], [])
            return
        lines, errors = check_lines(data, batch.endpoint)
        if fail and not errors:
            errors = [dict(FAILED_BY_FAULT)]
        if errors:
            batch.errors = errors
            batch.move("failed")
            return
        batch.total = len(lines)
        batch.move("in_progress")
        done: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        start, step = loop.time(), self.settings.seconds(self.settings.line_s)
        for i, line in enumerate(lines):
            outcome = await self._wait(batch, start + (i + 1) * step - loop.time(), deadline, True)
            if outcome:
                await self._stop(batch, outcome, done, bad, lines[i:])
                return
            self._answer(batch, line, done, bad)
        batch.move("finalizing")
        await asyncio.sleep(self.settings.seconds(self.settings.finalizing_s))
        self._write(batch, done, bad)
        batch.move("completed")

    async def _wait(
        self, batch: Batch, nominal_or_real: float, deadline: float, real: bool = False
    ) -> str:
        """Wait (until cancelled or expired); return "cancelled", "expired" or ""."""
        loop = asyncio.get_running_loop()
        delay = nominal_or_real if real else self.settings.seconds(nominal_or_real)
        delay = min(delay, deadline - loop.time())
        if delay > 0 and not batch.cancel_requested.is_set():
            try:
                await asyncio.wait_for(batch.cancel_requested.wait(), delay)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(0)
        if batch.cancel_requested.is_set():
            return "cancelled"
        return "expired" if loop.time() >= deadline else ""

    def _answer(
        self, batch: Batch, line: Line, done: list[dict[str, Any]], bad: list[dict[str, Any]]
    ) -> None:
        answered = answer_line(self.config, batch.endpoint, line.body, self.number)
        request = answered.request
        self.ledger.record(
            LedgerEntry(
                time.monotonic(),
                batch.masked,
                request.model,
                request.digest,
                answered.status,
                False,
                answered.fault,
                request.inputs,
                event="batch_line",
                batch_id=batch.id,
                custom_id=line.custom_id,
                kind=batch.endpoint,
            )
        )
        out = output_line(line.custom_id, answered.status, answered.body)
        if answered.status == 200:
            batch.completed += 1
            done.append(out)
        else:
            batch.failed += 1
            bad.append(out)

    async def _stop(
        self,
        batch: Batch,
        outcome: str,
        done: list[dict[str, Any]],
        bad: list[dict[str, Any]],
        left: list[Line],
    ) -> None:
        """End `batch` as "cancelled" (after "cancelling") or "expired", keeping its work."""
        error = CANCELLED if outcome == "cancelled" else EXPIRED
        bad.extend(unexecuted_line(line.custom_id, error) for line in left)
        batch.failed += len(left)
        if outcome == "cancelled":
            await asyncio.sleep(self.settings.seconds(self.settings.cancelling_s))
        self._write(batch, done, bad)
        batch.move(outcome)

    def _write(self, batch: Batch, done: list[dict[str, Any]], bad: list[dict[str, Any]]) -> None:
        """Write the output and error files (each shuffled; none when it would be empty)."""
        rng = random.Random(f"{self.config.seed}:{batch.id}")
        files = ((done, "output", "output_file_id"), (bad, "error", "error_file_id"))
        for lines, suffix, attr in files:
            if not lines:
                continue
            rng.shuffle(lines)
            data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
            stored = self.files.add(
                batch.owner, f"{batch.id}_{suffix}.jsonl", "batch_output", data.encode()
            )
            setattr(batch, attr, stored.id)
