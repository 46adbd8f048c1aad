"""The Files API: `/v1/files`, the uploads a batch reads and the files it writes.

    POST   /v1/files               multipart form (`purpose`, `file`): upload, a File object back
    GET    /v1/files               the key's files, newest first (`purpose` filters)
    GET    /v1/files/{id}          one File object
    GET    /v1/files/{id}/content  the file's bytes
    DELETE /v1/files/{id}          `{"id", "object": "file", "deleted": true}`

Files belong to the key that uploaded them (a real provider scopes them to an organization or
project; one key is the closest here): another key gets 404 for them and never lists them.
They live in memory only, so a restarted simulator process has none. Uploads and downloads
can be held open (`BatchSettings.upload_delay_s`, `content_delay_s`, in real seconds) so a test
can kill its client in the middle of one; a client gone by the end of the delay gets nothing
stored or sent, and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import email.message
import email.parser
import email.policy
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web

from . import faults
from .answers import json_bytes
from .faults import JSON
from .ledger import Ledger, LedgerEntry
from .settings import BatchSettings

PATH = "/v1/files"
PURPOSES = frozenset(
    {"batch", "batch_output", "fine-tune", "assistants", "vision", "user_data", "evals"}
)
"""The purposes a file may have ("batch_output" only for what a batch writes)."""


@dataclass(frozen=True)
class SimFile:
    """One stored file: its bytes and the File object that describes them."""

    id: str
    owner: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_dict(self) -> dict[str, object]:
        """Return the File object OpenAI answers for this file."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> web.Response:
    """Return an OpenAI-shaped invalid_request_error response."""
    body = faults.openai_error(message, "invalid_request_error", code, param)
    return web.Response(status=status, body=body, content_type=JSON)


def reply(data: object) -> web.Response:
    """Return a 200 JSON response holding `data`."""
    return web.Response(body=json_bytes(data), content_type=JSON)


def connected(request: web.BaseRequest) -> bool:
    """Return whether `request`'s client is still connected (its socket open)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


async def _body(request: web.BaseRequest) -> bytes:
    """Return the whole body (read from the stream: uploads may pass aiohttp's 1 MiB cap)."""
    return await request.content.read()


def _read_form(content_type: str, body: bytes) -> tuple[str | None, str, bytes | None]:
    """Return a multipart form's `purpose`, the `file` part's filename, and its bytes.

    Parsed with the standard library's MIME parser (aiohttp's multipart reader warns of
    deprecated calls on some part boundaries).
    """
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    purpose: str | None = None
    filename, data = "", None
    if not isinstance(message, email.message.EmailMessage) or not message.is_multipart():
        return purpose, filename, data
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if name == "purpose":
            purpose = payload.decode("utf-8", "replace")
        elif name == "file":
            filename, data = part.get_filename() or "upload", payload
    return purpose, filename, data


class FileStore:
    """Every key's files, by id; recording each upload and download in the ledger.

    Args:
        ledger: where uploads and downloads are recorded.
        settings: the Batch API's settings (their upload and content delays are used).
    """

    def __init__(self, ledger: Ledger, settings: BatchSettings | None = None) -> None:
        self._files: dict[str, SimFile] = {}
        self._ledger = ledger
        self._settings = settings if settings is not None else BatchSettings()

    def _record(self, masked: str, event: str, file_id: str) -> None:
        entry = LedgerEntry(
            time.monotonic(), masked, "", "", 200, False, "", 0, event=event, file_id=file_id
        )
        self._ledger.record(entry)

    def add(self, owner: str, filename: str, purpose: str, data: bytes) -> SimFile:
        """Store a file for `owner` (a real key) and return it."""
        stored = SimFile(f"file-{uuid.uuid4().hex[:24]}", owner, filename, purpose, data)
        self._files[stored.id] = stored
        return stored

    def get(self, owner: str, file_id: str) -> SimFile | None:
        """Return `owner`'s file `file_id`, or None (another key's files are not found)."""
        found = self._files.get(file_id)
        return found if found is not None and found.owner == owner else None

    async def handle(self, request: web.BaseRequest, owner: str, masked: str) -> web.Response:
        """Answer a request under /v1/files for the key `owner` (masked: `masked`)."""
        parts = request.path[len(PATH) :].strip("/").split("/")
        method = request.method
        if parts == [""]:
            if method == "POST":
                return await self._upload(request, owner, masked)
            if method == "GET":
                return self._list(request, owner)
        elif len(parts) <= 2:
            stored = self.get(owner, parts[0])
            if stored is None:
                return error(404, f"No such File object: {parts[0]}", "id")
            if len(parts) == 2 and parts[1] == "content" and method == "GET":
                return await self._download(request, stored, masked)
            if len(parts) == 1 and method == "GET":
                return reply(stored.to_dict())
            if len(parts) == 1 and method == "DELETE":
                del self._files[stored.id]
                return reply({"id": stored.id, "object": "file", "deleted": True})
        return error(404, f"Unknown request URL: {method} {request.path}", code="unknown_url")

    async def _upload(self, request: web.BaseRequest, owner: str, masked: str) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return error(400, "Uploads must be sent as multipart/form-data", "file")
        body = await _body(request)
        if self._settings.upload_delay_s > 0:
            await asyncio.sleep(self._settings.upload_delay_s)  # real seconds, never scaled
            if not connected(request):
                return web.Response(status=499)  # nobody reads it: the client is gone
        purpose, filename, data = _read_form(request.headers["Content-Type"], body)
        if purpose is None:
            return error(400, "Missing required parameter: 'purpose'.", "purpose")
        if purpose not in PURPOSES - {"batch_output"}:
            return error(400, f"Invalid value for 'purpose': {purpose!r}.", "purpose")
        if data is None:
            return error(400, "Missing required parameter: 'file'.", "file")
        stored = self.add(owner, filename, purpose, bytes(data))
        self._record(masked, "file_upload", stored.id)
        return reply(stored.to_dict())

    async def _download(
        self, request: web.BaseRequest, stored: SimFile, masked: str
    ) -> web.Response:
        """Send a file's bytes after `content_delay_s`, recording "file_download" first."""
        if self._settings.content_delay_s > 0:
            await asyncio.sleep(self._settings.content_delay_s)  # real seconds, never scaled
        if not connected(request):
            return web.Response(status=499)  # nobody reads it: the client is gone
        # Recorded before writing, so the ledger never lags behind what a client has read.
        self._record(masked, "file_download", stored.id)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    def _list(self, request: web.BaseRequest, owner: str) -> web.Response:
        purpose = request.query.get("purpose")
        files = [
            f.to_dict()
            for f in reversed(self._files.values())
            if f.owner == owner and (purpose is None or f.purpose == purpose)
        ]
        return reply({"object": "list", "data": files, "has_more": False})
