"""HTTP: send one request, turn whatever comes back into a Completion or a typed error.

What a request is (its URL path, how a 200 body is read) is the operation's
(squall.operations); the error statuses, error bodies and headers are HTTP's, and stay here.
This is the only module that knows HTTP statuses, header names and error body shapes
(OpenAI's `{"error": {...}}`, `{"error": "..."}`, FastAPI's `{"detail": ...}`, plain text, a
proxy's HTML). aiohttp was chosen over httpx by measurement (bench/overhead): at hundreds of
connections httpx spent about ten times the client CPU per request.
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp

from .errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    ContentFiltered,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
)
from .limits import RateInfo, parse_duration
from .operations import CHAT, Operation
from .ports import Lease
from .records import Completion
from .redact import Redactor

T = TypeVar("T")
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_MAX_MESSAGE = 300
# How providers and relays word a refusal for too many requests in flight at once (Moonshot:
# "max organization concurrency"; Zhipu: "并发数过高"; one-api/new-api relays: "并发").
_CONCURRENCY_WORDS = re.compile(r"concurren|parallel|in[ -]flight|并发", re.I)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to send: built once per key, so the hot path only looks things up."""

    url: str
    headers: Mapping[str, str] = field(repr=False)  # holds the key: never in a repr
    timeout: aiohttp.ClientTimeout
    proxy: str | None = None
    """From HTTP(S)_PROXY/NO_PROXY, resolved once here rather than on every request."""


def make_target(
    base_url: str,
    api_key: str,
    *,
    timeout_s: float,
    extra_headers: Mapping[str, str],
    operation: Operation = CHAT,
) -> Target:
    """Return the Target for one key of an endpoint, posting to `operation`'s path."""
    headers = {"Content-Type": "application/json", **extra_headers}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = base_url + operation.path
    return Target(
        url=url,
        headers=headers,
        proxy=proxy_for(url),
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s)),
    )


def proxy_for(url: str) -> str | None:
    """Return the proxy the environment sets for `url` (HTTP(S)_PROXY, NO_PROXY), or None."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class Transport:
    """One aiohttp session for the run: the engine's `TransportPort`.

    `send(lease, body)` resolves the lease's key id in `targets` (the table of URLs and
    credentials built in the wiring, the only place where key ids meet secrets) and posts
    `body` there; `post(target, body)` posts to a Target directly. A 200 body is read by the
    operation (chat by default); everything else is mapped here.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        redactor: Redactor,
        keep_raw: bool,
        operation: Operation = CHAT,
        targets: Mapping[str, Target] | None = None,
    ) -> None:
        self._targets: Mapping[str, Target] = targets or {}
        self._max_connections = max_connections
        self._redact = redactor
        self._keep_raw = keep_raw
        self._parse = operation.parse  # bound once: it runs for every answer
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Transport:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300
        )
        # No cookies, and trust_env off: with it aiohttp looks up netrc and proxies in a worker
        # thread on every request, which cost more client CPU than all the rest (bench/overhead).
        # Proxies from the environment are still honoured: make_target resolves them once.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, lease: Lease, body: bytes) -> tuple[Completion, RateInfo | None]:
        """Post `body` with the lease's key; return the completion and the rate-limit headers.

        Raises:
            RequestError: a subclass saying what went wrong (see squall.errors).
        """
        return await self._post(self._targets[lease.key], body, self._parse)

    async def send_raw(self, lease: Lease, body: bytes) -> tuple[bytes, RateInfo | None]:
        """Post `body` with the lease's key; return a 200 answer's body unread, and the headers.

        For a pack of rows (embeddings), whose answer the engine shares out itself.

        Raises:
            RequestError: a subclass saying what went wrong (a 200 is never one).
        """
        return await self._post(self._targets[lease.key], body, _unread)

    async def post(self, target: Target, body: bytes) -> tuple[Completion, RateInfo | None]:
        """Post `body` to `target`; return the completion and the rate-limit headers.

        Raises:
            RequestError: a subclass saying what went wrong (see squall.errors).
        """
        return await self._post(target, body, self._parse)

    async def _post(
        self,
        target: Target,
        body: bytes,
        parse: Callable[[bytes, bool, Callable[[str], str]], T],
    ) -> tuple[T, RateInfo | None]:
        assert self._session is not None, "use `async with Transport(...)`"
        try:
            async with self._session.post(
                target.url,
                data=body,
                headers=target.headers,
                timeout=target.timeout,
                proxy=target.proxy,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                headers = resp.headers
        except asyncio.TimeoutError:
            raise RequestTimeout("no complete answer within the timeout") from None
        except aiohttp.ClientConnectorError as e:
            raise ConnectionLost(
                f"cannot connect to {target.url}: {e.os_error.strerror or e}", refused=True
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as e:
            raise ConnectionLost(f"connection closed mid-answer: {type(e).__name__}") from None
        except aiohttp.ClientOSError as e:
            raise ConnectionLost(f"connection reset: {e.strerror or e}") from None
        except aiohttp.ClientError as e:
            raise ConnectionLost(self._redact(f"{type(e).__name__}: {e}")) from None
        rate = parse_rate_headers(headers)
        if status == 200:
            return parse(raw, self._keep_raw, self._redact), rate
        error = self._error(status, raw, headers)
        error.rate = rate
        raise error

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> RequestError:
        return classify(status, raw, headers, self._redact)


def classify(
    status: int, raw: bytes, headers: Mapping[str, str], redact: Callable[[str], str]
) -> RequestError:
    """Return the typed error an answer with HTTP `status` and body `raw` stands for.

    Also for the lines of a Batch API error file (`squall.batchapi.lines`), which carry an
    online answer's status and body.
    """
    message, code = error_message(raw)
    message = redact(message)
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    if status == 429:
        if code in ("insufficient_quota", "billing_hard_limit_reached"):
            return AuthError(text, status=status)
        return RateLimited(
            text,
            retry_after=retry_after_s(headers),
            concurrency=_CONCURRENCY_WORDS.search(f"{code or ''} {message}") is not None,
        )
    # Checked before 403: some providers refuse filtered content with a 403, and taking
    # that for a dead key would let one bad row remove every key from the pool.
    if (
        code == "content_filter"
        or "content_filter" in message
        or "content management policy" in message
    ):
        return ContentFiltered(text, status=status)
    if status in (401, 403):
        return AuthError(text, status=status)
    if status == 408:
        return RequestTimeout(text, status=status)
    if status >= 500:
        return ServerError(text, status=status)
    return BadRequest(text, status=status)


def _unread(raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> bytes:
    return raw


def error_message(raw: bytes) -> tuple[str, str | None]:
    """Return a short readable reason and the error code, whatever shape the body has."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return "", None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail") or json.dumps(err)
            code = err.get("code") or err.get("type")
            return _clip(str(msg)), str(code) if code is not None else None
        if isinstance(err, list):  # FastAPI validation errors
            parts = [str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err]
            return _clip("; ".join(parts)), None
        if err is not None:
            return _clip(str(err)), None
        return _clip(text), None
    if "<" in text and ">" in text:
        title = _TITLE.search(text)
        body = title.group(1) if title else _TAG.sub(" ", text)
        return _clip(html.unescape(_SPACE.sub(" ", body)).strip()), None
    return _clip(_SPACE.sub(" ", text)), None


def _finite(text: str | None) -> float | None:
    """Return `text` as a finite number, or None (absent, junk, inf or nan)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Return the wait a 429 asked for, in seconds, or None.

    From `retry-after-ms`, else `Retry-After` (seconds or an HTTP-date).
    """
    ms = _finite(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000.0)
    value = headers.get("Retry-After")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def parse_rate_headers(headers: Mapping[str, str]) -> RateInfo | None:
    """Return the `x-ratelimit-*` headers as numbers, or None when there are none."""
    if not any(
        name in headers
        for name in (
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
        )
    ):
        return None

    def num(name: str) -> float | None:
        v = _finite(headers.get(name))
        return v if v is not None and v >= 0 else None

    def dur(name: str) -> float | None:
        v = headers.get(name)
        return parse_duration(v) if v else None

    return RateInfo(
        limit_requests=num("x-ratelimit-limit-requests"),
        remaining_requests=num("x-ratelimit-remaining-requests"),
        reset_requests_s=dur("x-ratelimit-reset-requests"),
        limit_tokens=num("x-ratelimit-limit-tokens"),
        remaining_tokens=num("x-ratelimit-remaining-tokens"),
        reset_tokens_s=dur("x-ratelimit-reset-tokens"),
    )
