"""The provider: how one HTTP request is answered, refused or broken (the aiohttp handler).

Order of checks for a request of any kind in `routes.REQUEST_KINDS`: key (401 unknown or dead,
403 forbidden), body (400), model (404 when `strict_models`), limits (429), content triggers
(`SQUALL_BAD_REQUEST`, `SQUALL_CONTENT_FILTER` -> 400), random faults, latency, answer. Every
one of them is recorded in the ledger. `GET /v1/models` and `GET /_squall/ledger` are answered
here directly. Requests under /v1/files and /v1/batches have their key checked (401, 403) and
go to their stores (`files.py`, `batches.py`), never counting against the online limits. Any
other path gets an OpenAI-shaped 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from aiohttp import web

from ..clock import Clock
from ..redact import mask_key
from . import batches, faults, files
from .answers import json_bytes
from .batches import BatchStore
from .faults import JSON, Faults
from .files import FileStore
from .ledger import Ledger, LedgerEntry
from .limits import KeyState
from .routes import REQUEST_KINDS, AnsweredRequest
from .settings import SimConfig, SimKey


class _Exchange:
    """One request being handled: what it asked, whose key it holds, what goes back."""

    __slots__ = ("counted", "headers", "request", "state", "t0")

    def __init__(self, t0: float, request: AnsweredRequest, state: KeyState) -> None:
        self.t0 = t0
        self.request = request
        self.state = state
        self.counted = False  # whether it holds one of its key's in-flight places
        self.headers: dict[str, str] = {}

    def entry(self, status: int, served: bool, fault: str) -> LedgerEntry:
        """Return the ledger entry recording this request's outcome."""
        r = self.request
        return LedgerEntry(
            self.t0, self.state.masked, r.model, r.digest, status, served, fault, r.inputs
        )

    def release(self) -> None:
        """Give back its in-flight place (once), before the client can see the answer."""
        if self.counted:
            self.state.in_flight -= 1
            self.counted = False


class Provider:
    """Answers HTTP requests as a provider would, under `config`, recording each in `ledger`.

    Args:
        config: how it behaves.
        clock: drives the rate limits only (latency uses real sleeps).
        ledger: where each handled request is recorded.
    """

    def __init__(self, config: SimConfig, clock: Clock, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        self._clock = clock
        now = clock.now()
        self.keys = {k.key: KeyState(k, config.burst_s, now) for k in config.keys}
        self._open_keys = not config.keys
        self._faults = Faults(config)
        self._latency_rng = random.Random(config.seed + 1)
        self._n_answers = 0
        self.files = FileStore(ledger, config.batches)
        self.batches = BatchStore(config, self.files, ledger, self._next_answer)
        self._models_body = json_bytes(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "squall-simulator"}
                    for m in config.models
                ],
            }
        )

    def _next_answer(self) -> int:
        """Return the next answer's number (online answers and batch lines share them)."""
        self._n_answers += 1
        return self._n_answers

    def in_flight(self) -> int:
        """Return the number of requests being handled now, over all keys."""
        return sum(s.in_flight for s in list(self.keys.values()))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Return the response to `request` (the aiohttp low-level server's handler)."""
        path = request.path
        kind = REQUEST_KINDS.get(path)
        if kind is not None and request.method == "POST":
            raw = await request.read()
            # Stamped after the read, so nothing between the ledger's time and the limit
            # check yields to the loop: the ledger's order is the order limits saw.
            return await self._answer_kind(request, time.monotonic(), kind(raw))
        if path == "/v1/models" and request.method == "GET":
            _, _, refusal = self._authorize(request.headers.get("Authorization", ""))
            if refusal is not None:
                return refusal
            return web.Response(body=self._models_body, content_type=JSON)
        for prefix, store in ((files.PATH, self.files), (batches.PATH, self.batches)):
            if path == prefix or path.startswith(prefix + "/"):
                owner, state, refusal = self._authorize(request.headers.get("Authorization", ""))
                if refusal is not None or state is None:
                    assert refusal is not None
                    return refusal
                return await store.handle(request, state.key, owner)
        if path == "/_squall/ledger" and request.method == "GET":
            entries = [e._asdict() for e in self.ledger.entries()]
            body = json_bytes({"served_count": self.ledger.served_count, "entries": entries})
            return web.Response(body=body, content_type=JSON)
        return web.Response(
            status=404,
            body=faults.openai_error(
                f"Unknown request URL: {request.method} {path}",
                "invalid_request_error",
                "unknown_url",
            ),
            content_type=JSON,
        )

    def _authorize(self, header: str) -> tuple[str, KeyState | None, web.Response | None]:
        """Return the masked key, its state, and the 401/403 to send if it may not pass."""
        key = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
        state = self.keys.get(key)
        if state is None and self._open_keys:
            state = self.keys[key] = KeyState(SimKey(key=key), self.config.burst_s, 0.0)
        masked = state.masked if state is not None else mask_key(key)
        shown = key if self.config.echo_key_in_errors else masked
        if state is None or state.dead:
            body = faults.unknown_key(shown)
            return masked, state, web.Response(status=401, body=body, content_type=JSON)
        if state.forbidden:
            body = faults.no_quota(shown)
            return masked, state, web.Response(status=403, body=body, content_type=JSON)
        return masked, state, None

    async def _answer_kind(
        self, request: web.BaseRequest, t0: float, parsed: AnsweredRequest
    ) -> web.StreamResponse:
        """Return the answer to a request of a known kind, or why it is refused."""
        masked, state, refusal = self._authorize(request.headers.get("Authorization", ""))
        if refusal is not None or state is None:
            assert refusal is not None
            entry = LedgerEntry(
                t0,
                masked,
                parsed.model,
                parsed.digest,
                refusal.status,
                False,
                "auth",
                parsed.inputs,
            )
            self.ledger.record(entry)
            return refusal
        call = _Exchange(t0, parsed, state)
        if parsed.problem:
            body = faults.openai_error(parsed.problem, "invalid_request_error", None)
            return self._reply(call, 400, body, "bad_body")
        if self.config.strict_models and parsed.model not in self.config.models:
            body = faults.openai_error(
                f"The model `{parsed.model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
            return self._reply(call, 404, body, "model")
        now = self._clock.now() if state.has_rate_limits else 0.0
        over = state.take(parsed.cost, now, self.config.busy_retry_after_s)
        if over is not None:
            faults.add_retry_after(call.headers, self.config.retry_after, over.wait_s)
            body = faults.limit_refusal(
                over, state.masked, state.max_concurrency, self.config.busy_wording
            )
            return self._reply(
                call, 429, body, over.kind if over.kind == "concurrency" else "limit"
            )
        state.in_flight += 1
        call.counted = True
        try:
            return await self._answer(request, call)
        finally:
            call.release()

    def _reply(
        self, call: _Exchange, status: int, data: bytes, fault: str, ctype: str = JSON
    ) -> web.Response:
        """Return an error (or malformed) response for `call`, recorded as not served."""
        self._add_ratelimit_headers(call)
        self.ledger.record(call.entry(status, False, fault))
        return web.Response(status=status, body=data, headers=call.headers, content_type=ctype)

    def _add_ratelimit_headers(self, call: _Exchange) -> None:
        if self.config.send_ratelimit_headers:
            now = self._clock.now() if call.state.has_rate_limits else 0.0
            call.state.ratelimit_headers(call.headers, now)

    async def _answer(self, request: web.BaseRequest, call: _Exchange) -> web.StreamResponse:
        """Return the answer to a request that passed every limit, or the fault drawn for it."""
        if call.request.contains("SQUALL_BAD_REQUEST"):
            return self._reply(call, 400, faults.BAD_REQUEST, "bad_request")
        if call.request.contains("SQUALL_CONTENT_FILTER"):
            return self._reply(call, 400, faults.CONTENT_FILTERED, "content_filter")

        fault = self._faults.draw()
        if fault == "429":
            faults.add_retry_after(
                call.headers, self.config.retry_after, self.config.busy_retry_after_s
            )
            return self._reply(call, 429, faults.OVERLOADED, "429")
        await self._wait_latency(call, hang=fault == "hang")

        if fault in ("500", "503"):
            data, ctype = self._faults.error_body(int(fault))
            return self._reply(call, int(fault), data, fault, ctype)
        answer = call.request.answer_body(self._next_answer())
        if fault == "malformed":
            data, ctype = self._faults.malformed_body(answer)
            return self._reply(call, 200, data, fault, ctype)
        data = json_bytes(answer)
        self._add_ratelimit_headers(call)
        if fault == "reset":
            return await self._reset(request, call, data)

        resp = web.Response(body=data, headers=call.headers, content_type=JSON)
        # Recorded before writing, so the ledger never lags behind what a client has read;
        # nothing between this check and the socket write yields to the loop.
        transport = request.transport
        served = transport is not None and not transport.is_closing()
        self.ledger.record(call.entry(200, served, fault))
        call.release()
        if served:
            with contextlib.suppress(ConnectionError):
                await resp.prepare(request)
                await resp.write_eof()
        return resp

    async def _wait_latency(self, call: _Exchange, *, hang: bool) -> None:
        """Sleep the configured latency (jittered), plus a hang's or SQUALL_SLOW's extra."""
        delay = self.config.latency_s
        if self.config.latency_jitter_s:
            jitter = self.config.latency_jitter_s
            delay = max(0.0, delay + self._latency_rng.uniform(-jitter, jitter))
        if hang:
            delay += self.config.hang_s
        if call.request.contains("SQUALL_SLOW"):
            delay += self.config.slow_s
        if delay > 0:
            await asyncio.sleep(delay)

    async def _reset(
        self, request: web.BaseRequest, call: _Exchange, data: bytes
    ) -> web.StreamResponse:
        """Send the headers and half the answer, then abort the connection."""
        self.ledger.record(call.entry(200, False, "reset"))
        call.release()
        resp = web.StreamResponse(status=200, headers=call.headers)
        resp.content_type = JSON
        resp.content_length = len(data)
        try:
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
        except ConnectionError:
            return resp
        if request.transport is not None:
            request.transport.abort()
        return resp
