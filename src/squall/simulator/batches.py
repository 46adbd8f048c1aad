"""The Batch API: `/v1/batches`, batches of requests answered offline from an uploaded file.

    POST /v1/batches              JSON {input_file_id, endpoint, completion_window: "24h",
                                  metadata}: a Batch object back, "validating"
    GET  /v1/batches              the key's batches, newest first (`limit` 1-100, default 20;
                                  `after`: a batch id), with first_id, last_id, has_more
    GET  /v1/batches/{id}         one Batch object
    POST /v1/batches/{id}/cancel  "cancelling" (then "cancelled"); 409 once it is finalizing
                                  or finished

Each batch runs as a task on the simulator's loop (`batchrun.py`); its lines are answered
like online requests but never count against the key's online limits. Batches belong to the
key that created them, as files do (`files.py`), and live in memory only: a restarted
simulator process has none. Every creation is recorded in the ledger (event "batch_create",
with its metadata), and so is every line answered (event "batch_line"). A creation's reply
can be held back `BatchSettings.create_reply_delay_s` (real seconds) after the batch was
created, recorded and set running, as when a client dies before reading the answer.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .batchlines import ENDPOINTS
from .batchrun import Batch, Runner
from .files import FileStore, error, reply
from .ledger import Ledger, LedgerEntry
from .settings import SimConfig

PATH = "/v1/batches"
FAIL_MARKER = ("squall_fault", "fail")
"""Metadata holding this key and value makes its batch fail in validating."""


def _check_metadata(metadata: Any) -> str:
    """Return why `metadata` is refused ("" when it is fine): up to 16 string pairs."""
    if metadata is None:
        return ""
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > 16:
        return "Invalid 'metadata': too many properties (at most 16)."
    for key, value in metadata.items():
        if len(key) > 64:
            return "Invalid 'metadata': keys may be at most 64 characters long."
        if not isinstance(value, str) or len(value) > 512:
            return "Invalid 'metadata': values must be strings of at most 512 characters."
    return ""


class BatchStore:
    """Every key's batches, answering the /v1/batches requests and running each batch.

    Args:
        config: the simulator's config (its `batches` settings pace the batches).
        files: where input files are read and output files written.
        ledger: where creations and answered lines are recorded.
        number: returns the next answer's number (shared with online answers).
    """

    def __init__(
        self, config: SimConfig, files: FileStore, ledger: Ledger, number: Callable[[], int]
    ) -> None:
        self._batches: dict[str, Batch] = {}
        self._runner = Runner(config, files, ledger, number)
        self._files = files
        self._ledger = ledger
        self._settings = config.batches
        self._rng = random.Random(config.seed + 2)

    def close(self) -> None:
        """Cancel every batch still running (the simulator is stopping)."""
        for batch in self._batches.values():
            if batch.task is not None and not batch.task.done():
                batch.task.cancel()

    async def handle(self, request: web.BaseRequest, owner: str, masked: str) -> web.Response:
        """Answer a request under /v1/batches for the key `owner` (masked: `masked`)."""
        parts = request.path[len(PATH) :].strip("/").split("/")
        method = request.method
        if parts == [""]:
            if method == "POST":
                return await self._create(request, owner, masked)
            if method == "GET":
                return self._list(request, owner)
        elif len(parts) <= 2:
            batch = self._batches.get(parts[0])
            if batch is None or batch.owner != owner:
                return error(404, f"No batch found with id '{parts[0]}'.", "batch_id")
            if len(parts) == 1 and method == "GET":
                return reply(batch.to_dict())
            if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
                return self._cancel(batch)
        return error(404, f"Unknown request URL: {method} {request.path}", code="unknown_url")

    async def _create(self, request: web.BaseRequest, owner: str, masked: str) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "We could not parse the JSON body of your request.")
        problem = self._check_create(body)
        if problem:
            return error(400, problem[0], problem[1])
        file_id = body["input_file_id"]
        stored = self._files.get(owner, file_id)
        if stored is None:
            return error(404, f"No such File object: {file_id}", "input_file_id")
        if stored.purpose != "batch":
            message = f"The file {file_id} has purpose {stored.purpose!r}, not 'batch'."
            return error(400, message, "input_file_id")
        metadata = body.get("metadata")
        batch = Batch(
            f"batch_{uuid.uuid4().hex[:24]}",
            owner,
            masked,
            file_id,
            body["endpoint"],
            dict(metadata) if metadata is not None else None,
            self._settings.expire_after_s,
        )
        self._batches[batch.id] = batch
        self._ledger.record(
            LedgerEntry(
                time.monotonic(),
                masked,
                "",
                "",
                200,
                False,
                "",
                0,
                event="batch_create",
                batch_id=batch.id,
                file_id=file_id,
                kind=batch.endpoint,
                metadata=batch.metadata,
            )
        )
        marked = metadata is not None and metadata.get(FAIL_MARKER[0]) == FAIL_MARKER[1]
        fail = marked or self._rng.random() < self._settings.p_fail
        batch.task = asyncio.get_running_loop().create_task(
            self._runner.run(batch, stored.data, fail), name=f"squall-simulator-{batch.id}"
        )
        answer = reply(batch.to_dict())  # the Batch as it was created: "validating"
        if self._settings.create_reply_delay_s > 0:
            await asyncio.sleep(self._settings.create_reply_delay_s)  # real seconds
        return answer

    @staticmethod
    def _check_create(body: dict[str, Any]) -> tuple[str, str] | None:
        """Return why a creation is refused and the parameter at fault, or None."""
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return f"Missing required parameter: '{name}'.", name
        if body["endpoint"] not in ENDPOINTS:
            return (
                f"Invalid value for 'endpoint': {body['endpoint']!r}; supported: "
                + ", ".join(ENDPOINTS),
                "endpoint",
            )
        if body["completion_window"] != "24h":
            return "Invalid value for 'completion_window': only '24h' is supported.", (
                "completion_window"
            )
        problem = _check_metadata(body.get("metadata"))
        return (problem, "metadata") if problem else None

    def _list(self, request: web.BaseRequest, owner: str) -> web.Response:
        raw_limit = request.query.get("limit", "20")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return error(400, f"Invalid 'limit': {raw_limit!r}; expected 1 to 100.", "limit")
        mine = [b for b in reversed(self._batches.values()) if b.owner == owner]
        after = request.query.get("after")
        if after is not None:
            ids = [b.id for b in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        page = mine[:limit]
        return reply(
            {
                "object": "list",
                "data": [b.to_dict() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(mine) > limit,
            }
        )

    def _cancel(self, batch: Batch) -> web.Response:
        if batch.status in ("validating", "in_progress"):
            batch.move("cancelling")
            batch.cancel_requested.set()
        elif batch.status != "cancelling":
            return error(409, f"Cannot cancel a batch with status '{batch.status}'.")
        return reply(batch.to_dict())
