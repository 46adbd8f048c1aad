"""An async client for the provider's Files and Batches API (`/files`, `/batches`).

    POST /files                  upload a batch input file (multipart, streamed from disk)
    POST /batches                create a batch from an uploaded file
    GET  /batches/{id}           one Batch object
    GET  /batches?limit&after    the account's batches, newest first (to adopt one by metadata)
    POST /batches/{id}/cancel    cancel a batch (a 409: it is finishing or finished already)
    GET  /files/{id}/content     a batch's output or error file, streamed to disk

Every call is retried on what a later try may cure (connection errors, timeouts, 408, 429,
5xx, an unreadable answer), waiting `Retry-After` when the provider sends it and an
exponential backoff with jitter otherwise; after the last try it raises `BatchAPIError` with
`retryable=True`. Any other 4xx raises at once with `retryable=False`. Every message goes
through the `redact` it is given, so a key echoed by the provider never shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp

from ..errors import BatchAPIError
from ..transport import error_message, proxy_for, retry_after_s

T = TypeVar("T")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""The statuses a batch never leaves."""
PAGE_LIMIT = 100
"""Batches asked for per page when listing (the most the API gives)."""
CHUNK = 1 << 16
"""Bytes read from the network at a time when downloading."""
_NO_API = "this endpoint offers no Batch API (no /v1/files or /v1/batches): run without --batch-api"


class RequestCounts(NamedTuple):
    """How many of a batch's requests there are, and how many have finished each way."""

    total: int
    completed: int
    failed: int


def _shape(reason: str) -> BatchAPIError:
    return BatchAPIError(f"the answer is not a Batch object: {reason}", retryable=False)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise _shape(f"{name!r} is missing or not a string")
    return value


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _shape(f"{name!r} is not a string")
    return value or None


def _counts(value: Any) -> RequestCounts:
    if value is None:
        return RequestCounts(0, 0, 0)
    if not isinstance(value, Mapping):
        raise _shape("'request_counts' is not an object")
    numbers = []
    for name in RequestCounts._fields:
        n = value.get(name, 0)
        if isinstance(n, bool) or not isinstance(n, int):
            raise _shape(f"'request_counts.{name}' is not a whole number")
        numbers.append(n)
    return RequestCounts(*numbers)


def _errors(value: Any) -> tuple[str, ...]:
    """Return each entry of a Batch object's `errors.data` as "code: message, line N"."""
    if value is None:
        return ()
    data = value.get("data") if isinstance(value, Mapping) else None
    if data is None:
        return ()
    if not isinstance(data, list):
        raise _shape("'errors.data' is not a list")
    out = []
    for item in data:
        if not isinstance(item, Mapping):
            out.append(str(item))
            continue
        code, message, line = item.get("code"), item.get("message"), item.get("line")
        text = f"{code}: {message}" if code and message else str(message or code or item)
        out.append(f"{text}, line {line}" if line is not None else text)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the provider says of one batch (its Batch object, the fields squall uses).

    Attributes:
        id: the batch's id (`batch_...`).
        status: validating, in_progress, finalizing, completed, failed, expired, cancelling
            or cancelled.
        endpoint: the URL path its lines are sent to (`/v1/chat/completions`, ...).
        input_file_id: the uploaded file it reads.
        output_file_id: the file of its successful lines, once written (None before, or when
            no line succeeded).
        error_file_id: the file of its failed lines, once written (None when none failed).
        request_counts: its lines: how many, how many succeeded, how many failed.
        metadata: the string pairs it was created with ({} when none).
        errors: why it failed validation, one "code: message, line N" each (() when it did not).
        created_at: when it was created, in Unix seconds (None when the provider did not say).
    """

    id: str
    status: str
    endpoint: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    request_counts: RequestCounts
    metadata: dict[str, str]
    errors: tuple[str, ...]
    created_at: float | None

    @property
    def terminal(self) -> bool:
        """True when the batch is over: completed, failed, expired or cancelled."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchInfo:
        """Return the BatchInfo of a Batch object, as the API answers it.

        Raises:
            BatchAPIError: `data` is not a Batch object (not retryable).
        """
        if not isinstance(data, Mapping):
            raise _shape(f"a JSON {type(data).__name__}, not an object")
        kind = data.get("object", "batch")
        if kind != "batch":
            raise _shape(f"its 'object' is {str(kind)[:40]!r}")
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, Mapping):
            raise _shape("'metadata' is not an object")
        created = data.get("created_at")
        if isinstance(created, bool) or not isinstance(created, int | float | None):
            raise _shape("'created_at' is not a number")
        return cls(
            id=_text(data, "id"),
            status=_text(data, "status"),
            endpoint=_text(data, "endpoint"),
            input_file_id=_text(data, "input_file_id"),
            output_file_id=_optional_text(data, "output_file_id"),
            error_file_id=_optional_text(data, "error_file_id"),
            request_counts=_counts(data.get("request_counts")),
            metadata={str(k): str(v) for k, v in metadata.items()},
            errors=_errors(data.get("errors")),
            created_at=float(created) if created is not None else None,
        )


class _Retry(Exception):
    """One try failed in a way a later try may cure (internal to BatchClient)."""

    def __init__(self, message: str, status: int | None = None, wait_s: float | None = None):
        self.message = message
        self.status = status
        self.wait_s = wait_s
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Call:
    """One API call: what to send, and what its 404 means."""

    method: str
    path: str
    subject: str | None = None
    """What the path's id names ("the batch batch_x"), for the message of a 404."""
    body: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None
    upload: tuple[Path, str] | None = None
    """The file to send as the multipart form's `file` part, and its filename."""
    long: bool = False
    """A transfer of a whole file: no total time limit, only one for each read."""


class BatchClient:
    """Calls an endpoint's Files and Batches API on an aiohttp session it is given.

    Args:
        session: the session to send on (the caller opens and closes it).
        base_url: the endpoint's base URL, ending in `/v1`.
        headers: sent with every request: Authorization (`Bearer KEY`) and any extra
            endpoint headers.
        redact: masks every key in a text; every error message goes through it.
        retries: tries per call (at least 1) before a retryable failure is raised.
        backoff_s: the first wait between tries when the provider names none; doubled each
            try, with jitter.
        backoff_max_s: the longest such wait.
        timeout_s: the longest a call may take (for uploads and downloads: the longest
            wait for each read or write of the transfer).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        headers: Mapping[str, str],
        *,
        redact: Callable[[str], str],
        retries: int = 6,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 600.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        # Content-Type is per request: JSON for JSON bodies, aiohttp's boundary for uploads.
        self._headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        self._redact = redact
        self._retries = max(1, retries)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        connect = min(10.0, timeout_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect)
        self._transfer_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=timeout_s
        )

    def __repr__(self) -> str:
        return f"BatchClient({self._redact(self._base)!r})"

    async def upload(self, path: Path, *, filename: str | None = None) -> str:
        """Upload `path` as a batch input file (purpose "batch"); return the file's id.

        The file is streamed from disk, never read whole into memory.

        Raises:
            BatchAPIError: the file cannot be read, or the upload failed.
        """
        call = _Call("POST", "/files", upload=(path, filename or path.name), long=True)
        return await self._call(call, _read_file_id)

    async def create(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> BatchInfo:
        """Create a batch of the lines in `input_file_id`, sent to `endpoint`; return it.

        Raises:
            BatchAPIError: the provider refused the batch, or could not be reached.
        """
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": dict(metadata),
        }
        call = _Call("POST", "/batches", subject=f"the file {input_file_id}", body=body)

        async def made_already() -> BatchInfo | None:
            # A lost answer (timeout, reset, 5xx) may hide a batch the provider did make:
            # trying again would make a second one and pay for its rows twice.
            return await self.find(metadata) if metadata else None

        return await self._call(call, _read_batch, before_retry=made_already)

    async def get(self, batch_id: str) -> BatchInfo:
        """Return the batch `batch_id` as the provider sees it now.

        Raises:
            BatchAPIError: the batch is not on this account, or the provider could not be
                reached.
        """
        call = _Call("GET", f"/batches/{batch_id}", subject=f"the batch {batch_id}")
        return await self._call(call, _read_batch)

    async def find(
        self,
        metadata: Mapping[str, str],
        *,
        newer_than: float | None = None,
        max_pages: int = 50,
        _page: int = PAGE_LIMIT,
    ) -> BatchInfo | None:
        """Return the newest batch whose metadata holds every pair of `metadata`, or None.

        Pages through the account's batches, newest first, `max_pages` pages at most; with
        `newer_than` (Unix seconds), stops at the first batch created before it.

        Raises:
            BatchAPIError: a page could not be fetched.
        """
        wanted = dict(metadata).items()
        after: str | None = None
        for _ in range(max_pages):
            params = {"limit": str(_page)}
            if after is not None:
                params["after"] = after
            page, has_more = await self._call(_Call("GET", "/batches", params=params), _read_page)
            for info in page:
                created = info.created_at
                if newer_than is not None and created is not None and created < newer_than:
                    return None
                if wanted <= info.metadata.items():
                    return info
            if not has_more or not page:
                return None
            after = page[-1].id
        return None

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask the provider to cancel `batch_id`; return the batch as it is then.

        A batch already finishing or finished (409) is no error: it is returned as it is.

        Raises:
            BatchAPIError: the batch is not on this account, or the provider could not be
                reached.
        """
        call = _Call("POST", f"/batches/{batch_id}/cancel", subject=f"the batch {batch_id}")
        try:
            return await self._call(call, _read_batch)
        except BatchAPIError as e:
            if e.status != 409:
                raise
        return await self.get(batch_id)

    async def download(self, file_id: str, dest: Path) -> int:
        """Write the file `file_id`'s content to `dest`; return the bytes written.

        Streamed in chunks to `dest` + ".part", which replaces `dest` once whole: `dest` is
        never left half written.

        Raises:
            BatchAPIError: the file is not on this account, the provider could not be
                reached, or `dest` cannot be written.
        """
        part = dest.with_suffix(dest.suffix + ".part")

        async def save(resp: aiohttp.ClientResponse) -> int:
            written = 0
            try:
                out = await asyncio.to_thread(part.open, "wb")
                with out:
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                os.replace(part, dest)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                raise  # the network's fault (both are OSErrors too): tried again
            except OSError as e:
                message = f"cannot write {dest}: {e.strerror or e}; free space or fix the path"
                raise BatchAPIError(self._redact(message), retryable=False) from None
            return written

        call = _Call("GET", f"/files/{file_id}/content", subject=f"the file {file_id}", long=True)
        try:
            return await self._call(call, save)
        finally:
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)

    # -- one call, tried again while a later try may pass -------------------------------------

    async def _call(
        self,
        call: _Call,
        read: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        before_retry: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        for attempt in range(1, self._retries + 1):
            try:
                return await self._try(call, read)
            except _Retry as failure:
                if before_retry is not None:
                    done = await before_retry()
                    if done is not None:
                        return done
                if attempt == self._retries:
                    raise self._gave_up(call, failure.message, failure.status) from None
                wait = failure.wait_s
                if wait is None:
                    cap = min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1))
                    wait = cap * random.uniform(0.5, 1.0)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last try returns or raises")

    async def _try(self, call: _Call, read: Callable[[aiohttp.ClientResponse], Awaitable[T]]) -> T:
        url = self._base + call.path
        headers = dict(self._headers)
        data: Any = None
        async with contextlib.AsyncExitStack() as stack:
            if call.body is not None:
                headers["Content-Type"] = "application/json"
                data = json.dumps(call.body).encode()
            if call.upload is not None:
                data = await self._form(stack, *call.upload)
            try:
                async with self._session.request(
                    call.method,
                    url,
                    params=call.params,
                    data=data,
                    headers=headers,
                    proxy=proxy_for(url),
                    timeout=self._transfer_timeout if call.long else self._timeout,
                ) as resp:
                    if 200 <= resp.status < 300:
                        return await read(resp)
                    raw = await resp.read()
                    raise self._refusal(call, resp.status, raw, resp.headers)
            except asyncio.TimeoutError:
                raise _Retry("no answer within the timeout") from None
            except aiohttp.ClientError as e:
                raise _Retry(f"connection failed ({type(e).__name__}: {e})") from None
        raise AssertionError("unreachable: the request returns or raises")

    async def _form(
        self, stack: contextlib.AsyncExitStack, path: Path, filename: str
    ) -> aiohttp.FormData:
        """Return the upload's multipart form, its `file` part read from disk as it is sent."""
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except OSError as e:
            message = f"cannot upload {path}: {e.strerror or e}"
            raise BatchAPIError(self._redact(message), retryable=False) from None
        stack.callback(handle.close)
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", handle, filename=filename, content_type="application/jsonl")
        return form

    def _refusal(
        self, call: _Call, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> Exception:
        """Return what a non-2xx answer means: a `_Retry`, or the BatchAPIError to raise."""
        message, _ = error_message(raw)
        said = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        if status in (408, 429) or status >= 500:
            return _Retry(said, status, retry_after_s(headers))
        if status in (401, 403):
            step = "check the key (wrong, revoked or out of credit) and that it may use batches"
        elif status == 404:
            step = self._not_found(call, raw)
        elif status == 409:
            step = "the batch is finishing or finished already"
        else:
            step = "the provider refused the request: fix what it names and rerun"
        text = f"{call.method} {self._base}{call.path}: {said}; {step}"
        return BatchAPIError(self._redact(text), status=status, retryable=False)

    @staticmethod
    def _not_found(call: _Call, raw: bytes) -> str:
        """Return the next step after a 404: the id is not on this account, or no Batch API."""
        if call.subject is None:
            return _NO_API
        if call.path in ("/files", "/batches"):
            # Creating a batch names a file: a 404 that names it is about the file, any other
            # says the path itself is missing.
            named = call.subject.rsplit(" ", 1)[-1]
            if named not in raw.decode("utf-8", "replace"):
                return _NO_API
        return f"{call.subject} is not on this account"

    def _gave_up(self, call: _Call, reason: str, status: int | None) -> BatchAPIError:
        text = (
            f"{call.method} {self._base}{call.path}: {reason}; gave up after {self._retries} "
            "tries: check the endpoint is up and try again later"
        )
        return BatchAPIError(self._redact(text), status=status, retryable=True)


async def _read_json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        shown = raw[:80].decode("utf-8", "replace")
        raise _Retry(f"HTTP {resp.status} with a body that is not JSON: {shown!r}") from None


async def _read_file_id(resp: aiohttp.ClientResponse) -> str:
    data = await _read_json(resp)
    file_id = data.get("id") if isinstance(data, Mapping) else None
    if not isinstance(file_id, str) or not file_id:
        raise _Retry("the answer to the upload is not a File object", resp.status)
    return file_id


async def _read_batch(resp: aiohttp.ClientResponse) -> BatchInfo:
    data = await _read_json(resp)
    try:
        return BatchInfo.from_json(data)
    except BatchAPIError as e:
        raise _Retry(str(e), resp.status) from None


async def _read_page(resp: aiohttp.ClientResponse) -> tuple[list[BatchInfo], bool]:
    data = await _read_json(resp)
    items = data.get("data") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise _Retry("the answer is not a list of batches", resp.status)
    try:
        page = [BatchInfo.from_json(item) for item in items]
    except BatchAPIError as e:
        raise _Retry(str(e), resp.status) from None
    return page, data.get("has_more") is True
