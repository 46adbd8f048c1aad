"""A simulated OpenAI-compatible provider on 127.0.0.1: test equipment, not a real API.

This is a SIMULATOR. It answers like a third-party API relay (per-key limits, 429s with
Retry-After, faults, odd error bodies) so squall's tests, benchmarks and `squall demo` have
something realistic and free to talk to. Its answers are computed, not generated:
`expected_answer(prompt)` says what each prompt gets, so a test can check every answer
belongs to its row.

Endpoints:
    POST /v1/chat/completions   the chat API (Authorization: Bearer KEY)
    GET  /v1/models             the configured model names
    GET  /_squall/ledger        everything served so far, as JSON

Order of checks for a chat request: key (401 unknown or dead, 403 forbidden), body (400),
model (404 when `strict_models`), limits (429), content triggers (`SQUALL_BAD_REQUEST`,
`SQUALL_CONTENT_FILTER` -> 400), random faults, latency, answer.

Limits are token buckets over short windows, as real providers enforce them: a key with
`rpm` refills rpm/60 requests a second into a bucket of `max(1, rpm/60 * burst_s)`, so a
600-rpm key refuses the 11th request sent within a tenth of a second. `tpm` works the same
way, charging each request up front `prompt_tokens + max_tokens` (or, without max_tokens,
`prompt_tokens + the answer's completion_tokens`). A request larger than the token bucket
passes when the bucket is full and leaves it in debt. Refused requests cost nothing.

Token counts are a cheap stand-in: `ceil(len(text) / 4) + 4` per message for the prompt,
`max(1, ceil(len(answer) / 4))` for the answer.

Run it in a thread (`with Simulator(cfg) as sim: sim.base_url`) or as a process:
`python -m squall.simulator --port 0 --config cfg.json --ledger-file served.jsonl`, which
prints its base URL as its first stdout line and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import IO, Any, Literal, NamedTuple, get_args

from aiohttp import web

from .clock import Clock, MonotonicClock
from .errors import ConfigError, ServeError
from .redact import mask_key

RetryAfterStyle = Literal["seconds", "ms", "date", "none"]
ErrorShape = Literal["rotate", "openai", "string", "detail", "text", "html"]
MalformedShape = Literal["rotate", "truncated", "not_json", "no_choices"]
BusyWording = Literal["concurrency", "rate"]

HOST = "127.0.0.1"
_ERROR_SHAPES: tuple[ErrorShape, ...] = ("openai", "string", "detail", "text", "html")
_MALFORMED_SHAPES: tuple[MalformedShape, ...] = ("truncated", "not_json", "no_choices")
_FAULTS: tuple[str, ...] = ("p_429", "p_500", "p_503", "p_reset", "p_malformed", "p_hang")
_ARITHMETIC = re.compile(r"\d+(?:\s*[-+x*]\s*\d+)+")
_TERM = re.compile(r"\d+|[-+x*]")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, kw_only=True, repr=False)
class SimKey:
    """One simulated API key and the limits the simulator enforces on it.

    Attributes:
        key: the secret the client sends as `Authorization: Bearer KEY`.
        rpm: requests per minute, None for unlimited.
        tpm: tokens per minute, None for unlimited.
        max_concurrency: in-flight requests allowed at once, None for unlimited.
        dead: every request gets 401 (a revoked key).
        forbidden: every request gets 403 insufficient_quota (a key out of credit).
    """

    key: str
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    dead: bool = False
    forbidden: bool = False

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"SimKey {self.masked}: {name} must be above 0 or None")

    @property
    def masked(self) -> str:
        """The key as it may be shown: `sk-...abcd`."""
        return mask_key(str(self.key))

    def __repr__(self) -> str:
        return (
            f"SimKey(key={self.masked!r}, rpm={self.rpm}, tpm={self.tpm}, "
            f"max_concurrency={self.max_concurrency}, dead={self.dead}, "
            f"forbidden={self.forbidden})"
        )


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the simulator behaves; every probability is drawn from one RNG seeded by `seed`.

    Attributes:
        keys: the accepted keys; empty means any key (or none) is accepted, unlimited.
        models: names listed by /v1/models.
        strict_models: refuse other model names with 404 (else any name is answered).
        burst_s: seconds of rate a full bucket holds (capacity = max(1, rate * burst_s)).
        retry_after: how a 429 says when to come back: "seconds" (Retry-After, integer
            seconds rounded up), "ms" (that plus `retry-after-ms`), "date" (an HTTP-date),
            "none" (no header).
        send_ratelimit_headers: add OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,
            tokens} headers to every response of a known key.
        latency_s: mean seconds before an answer (or a 5xx, reset or malformed body).
        latency_jitter_s: latency is drawn uniformly from latency_s +/- this (floored at 0).
        p_429: chance of a spontaneous 429 (an overloaded upstream) after limits pass.
        p_500: chance of a 500, with a body shaped by `error_shape`.
        p_503: chance of a 503, shaped likewise.
        p_reset: chance the connection is aborted halfway through the answer.
        p_malformed: chance of a 200 whose body is not a chat completion.
        p_hang: chance of waiting `hang_s` before answering (to trip client timeouts).
        hang_s: how long a hang lasts.
        slow_s: extra latency for prompts containing SQUALL_SLOW.
        error_shape: body of 5xx errors; "rotate" cycles through all shapes in turn.
        malformed_shape: body of malformed answers; "rotate" cycles through them.
        busy_retry_after_s: Retry-After given for concurrency refusals and spontaneous 429s.
        busy_wording: how a concurrency refusal reads: "concurrency" says so ("Too many
            concurrent requests", as Moonshot or Zhipu do), "rate" words it like a rate limit
            (as many relays do).
        echo_key_in_errors: put the full key in 401/403 messages, as careless relays do,
            to test that the client redacts it.
        seed: seeds the fault and latency RNGs.
        ledger_max: entries the ledger keeps (oldest dropped); `served_count()` is exact.
    """

    keys: tuple[SimKey, ...] = ()
    models: tuple[str, ...] = ("sim-model",)
    strict_models: bool = False
    burst_s: float = 1.0
    retry_after: RetryAfterStyle = "seconds"
    send_ratelimit_headers: bool = False
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    p_429: float = 0.0
    p_500: float = 0.0
    p_503: float = 0.0
    p_reset: float = 0.0
    p_malformed: float = 0.0
    p_hang: float = 0.0
    hang_s: float = 30.0
    slow_s: float = 2.0
    error_shape: ErrorShape = "rotate"
    malformed_shape: MalformedShape = "rotate"
    busy_retry_after_s: float = 1.0
    busy_wording: BusyWording = "concurrency"
    echo_key_in_errors: bool = False
    seed: int = 0
    ledger_max: int = 1_000_000

    def __post_init__(self) -> None:
        probabilities = [getattr(self, name) for name in _FAULTS]
        for name, p in zip(_FAULTS, probabilities, strict=True):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"SimConfig.{name} must be between 0 and 1, got {p}")
        if sum(probabilities) > 1.0 + 1e-9:
            raise ConfigError(f"SimConfig: the fault probabilities {_FAULTS} add up to above 1")
        for name, allowed in (
            ("retry_after", get_args(RetryAfterStyle)),
            ("error_shape", get_args(ErrorShape)),
            ("malformed_shape", get_args(MalformedShape)),
            ("busy_wording", get_args(BusyWording)),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"SimConfig.{name} must be one of {allowed}")
        for name in ("burst_s", "latency_s", "latency_jitter_s", "hang_s", "slow_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SimConfig.{name} must be 0 or more")
        if len({k.key for k in self.keys}) != len(self.keys):
            raise ConfigError("SimConfig.keys: each key must differ")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimConfig:
        """Return a config from plain data (as `to_dict` writes it, or hand-written JSON).

        Raises:
            ConfigError: an unknown field, or a value of the wrong kind.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"simulator config: unknown field(s) {unknown}; known: {sorted(known)}"
            )
        values = dict(data)
        try:
            keys = values.get("keys", ())
            values["keys"] = tuple(
                SimKey(key=k) if isinstance(k, str) else SimKey(**k) for k in keys
            )
            if "models" in values:
                values["models"] = tuple(values["models"])
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f"simulator config: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready data, real keys included (it is test data)."""
        data = dataclasses.asdict(self)
        data["keys"] = [dataclasses.asdict(k) for k in self.keys]
        data["models"] = list(self.models)
        return data


def demo_config() -> SimConfig:
    """Return the config `squall demo` serves: 3 uneven keys, 0.2 s latency, a few faults."""
    return SimConfig(
        keys=(
            SimKey(key="sk-demo-a-0000000000000600", rpm=600),
            SimKey(key="sk-demo-b-0000000000000300", rpm=300),
            SimKey(key="sk-demo-c-0000000000000120", rpm=120),
        ),
        models=("demo-model",),
        latency_s=0.2,
        latency_jitter_s=0.1,
        p_500=0.02,
        p_reset=0.01,
        retry_after="seconds",
        send_ratelimit_headers=False,
    )


# ---------------------------------------------------------------------------------------------
# Answers


def prompt_digest(prompt: str) -> str:
    """Return the sha256 hex digest of `prompt` (what the ledger stores per request)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def expected_answer(prompt: str) -> str:
    """Return the text the simulator answers to a last user message `prompt`.

    The first run of integers joined by + - x * (x means *, usual precedence) is
    evaluated, e.g. "what is 12 + 7 x 3?" -> "33"; any other prompt gets
    `echo:<first 16 hex chars of its sha256>`.
    """
    match = _ARITHMETIC.search(prompt)
    if match is None:
        return "echo:" + prompt_digest(prompt)[:16]
    tokens = _TERM.findall(match.group(0))
    total = 0
    term = int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2], strict=False):
        if op in "x*":
            term *= int(operand)
        else:
            total += term
            term = int(operand) if op == "+" else -int(operand)
    return str(total + term)


def format_duration(seconds: float) -> str:
    """Return `seconds` as OpenAI writes durations in headers: "20ms", "1s", "1.5s", "6m0s"."""
    total_ms = math.ceil(max(0.0, seconds) * 1000)
    if total_ms < 1000:
        return f"{total_ms}ms" if total_ms else "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text parts count
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


# ---------------------------------------------------------------------------------------------
# Limits


class _Bucket:
    """A token bucket: `rate` per second into `capacity`, starting full."""

    __slots__ = ("capacity", "level", "limit_per_min", "rate", "stamp")

    def __init__(self, per_minute: float, burst_s: float, now: float) -> None:
        self.limit_per_min = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def shortfall_s(self, amount: float) -> float:
        """Seconds until `amount` fits (0 when it fits now); assumes refill() was called."""
        need = min(amount, self.capacity)  # larger requests pass on a full bucket
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def remaining_per_min(self) -> int:
        # Reported in per-minute units so `remaining` is comparable with `limit`, and reaches 0
        # exactly when the next request would be refused.
        return max(0, math.floor(self.level / self.capacity * self.limit_per_min))

    def reset_s(self) -> float:
        return max(0.0, self.capacity - self.level) / self.rate


class _KeyState:
    """Live state of one key: its buckets and in-flight count (touched only on the loop)."""

    __slots__ = (
        "dead",
        "forbidden",
        "in_flight",
        "key",
        "masked",
        "max_concurrency",
        "requests",
        "tokens",
    )

    def __init__(self, spec: SimKey, burst_s: float, now: float) -> None:
        self.key = spec.key
        self.masked = mask_key(spec.key)
        self.dead = spec.dead
        self.forbidden = spec.forbidden
        self.max_concurrency = spec.max_concurrency
        self.requests = _Bucket(spec.rpm, burst_s, now) if spec.rpm else None
        self.tokens = _Bucket(spec.tpm, burst_s, now) if spec.tpm else None
        self.in_flight = 0

    def set_limit(self, which: str, per_minute: float | None, burst_s: float, now: float) -> None:
        old: _Bucket | None = getattr(self, which)
        if per_minute is None:
            setattr(self, which, None)
            return
        new = _Bucket(per_minute, burst_s, now)
        if old is not None:  # a changed limit keeps what was already spent
            old.refill(now)
            new.level = min(new.capacity, old.level)
        setattr(self, which, new)

    def ratelimit_headers(self, headers: dict[str, str]) -> None:
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit_per_min))
                headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining_per_min())
                headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_s())


# ---------------------------------------------------------------------------------------------
# The ledger


class LedgerEntry(NamedTuple):
    """One chat-completion request the simulator handled.

    Attributes:
        t: time.monotonic() when it was handled (comparable across processes on one host).
        key: the masked key, never the real one.
        model: the model asked for ("" when the body was unreadable).
        prompt_sha256: sha256 hex of the last user message ("" when there was none).
        status: the HTTP status sent.
        served: True only when a complete 200 answer was written to the connection.
        fault: the fault that was injected ("" for none): "429", "500", "503", "reset",
            "malformed", "hang", "limit" (over a rate limit), "concurrency" (over the key's
            requests in flight), "bad_request", "content_filter".
    """

    t: float
    key: str
    model: str
    prompt_sha256: str
    status: int
    served: bool
    fault: str


# ---------------------------------------------------------------------------------------------
# The server


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _openai_error(
    message: str, type_: str | None, code: str | None, param: str | None = None
) -> bytes:
    return _json({"error": {"message": message, "type": type_, "param": param, "code": code}})


_JSON = "application/json"


class _Call:
    """One chat request, parsed leniently: what the handler needs to answer or refuse it."""

    __slots__ = (
        "answer",
        "cost",
        "counted",
        "digest",
        "headers",
        "last_user",
        "max_tokens",
        "model",
        "problem",
        "state",
        "t0",
        "texts",
    )

    def __init__(self, t0: float, raw: bytes) -> None:
        self.t0 = t0
        self.state: _KeyState | None = None
        self.counted = False  # whether it holds one of its key's in-flight places
        self.headers: dict[str, str] = {}
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        body = payload if isinstance(payload, dict) else {}
        model = body.get("model")
        self.model = model if isinstance(model, str) else ""
        self.texts: list[str] = []
        self.last_user: str | None = None
        messages = body.get("messages")
        for m in messages if isinstance(messages, list) else ():
            if isinstance(m, dict):
                text = _message_text(m.get("content"))
                self.texts.append(text)
                if m.get("role") == "user":
                    self.last_user = text
        self.digest = prompt_digest(self.last_user) if self.last_user is not None else ""
        self.answer = expected_answer(self.last_user) if self.last_user is not None else ""
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        self.max_tokens: int | None = max_tokens if type(max_tokens) is int else None
        self.problem = ""
        if not isinstance(payload, dict):
            self.problem = "We could not parse the JSON body of your request."
        elif not self.model:
            self.problem = "you must provide a model parameter"
        elif self.last_user is None:
            self.problem = "'messages' must be a list holding at least one user message"
        elif max_tokens is not None and (self.max_tokens is None or self.max_tokens < 1):
            self.problem = "max_tokens must be an integer of at least 1"
        elif body.get("stream"):
            self.problem = "this simulator does not stream; send stream=false"
        self.cost = 0
        if not self.problem:
            # Charged up front like OpenAI: max_tokens when given, else what the answer uses.
            done = self.max_tokens or _completion_tokens(self.answer)
            self.cost = self.prompt_tokens() + done

    def release(self) -> None:
        """Give back its in-flight place (once), before the client can see the answer."""
        if self.counted and self.state is not None:
            self.state.in_flight -= 1
            self.counted = False

    def contains(self, marker: str) -> bool:
        return any(marker in t for t in self.texts)

    def prompt_tokens(self) -> int:
        return sum(math.ceil(len(t) / 4) + 4 for t in self.texts)

    def completion(self, answer_id: str) -> dict[str, Any]:
        """Return the chat.completion object answering this request."""
        answer = self.answer
        completion_tokens, finish_reason = _completion_tokens(answer), "stop"
        if self.max_tokens is not None and self.max_tokens < completion_tokens:
            answer, completion_tokens = answer[: self.max_tokens * 4], self.max_tokens
            finish_reason = "length"
        prompt_tokens = self.prompt_tokens()
        return {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "squall-simulator",
        }


def _completion_tokens(answer: str) -> int:
    return max(1, math.ceil(len(answer) / 4))


_CONTENT_FILTERED = _json(
    {
        "error": {
            "message": "The response was filtered due to the prompt triggering the content "
            "management policy. Please modify your prompt and retry.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
            },
        }
    }
)


async def _cancel_other_tasks() -> None:
    """Cancel every other task on the running loop and wait (bounded) for them to end."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)


class Simulator:
    """A simulated OpenAI-compatible provider on 127.0.0.1 (test equipment, not a real API).

    Use it in a background thread with its own loop (`start()`/`stop()` or `with`), or
    inside a running loop (`await astart()`/`await astop()`).

    Args:
        config: how it behaves.
        port: the port to listen on; 0 picks a free one.
        clock: drives the rate-limit buckets only (latency uses real sleeps); pass a
            `squall.testing.FakeClock` to make refusals independent of machine speed.
        ledger_file: append each ledger entry to this file as a JSON line, flushed.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        port: int = 0,
        clock: Clock | None = None,
        ledger_file: str | Path | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self._port = port
        self._clock: Clock = clock or MonotonicClock()
        self._ledger_path = Path(ledger_file) if ledger_file is not None else None
        self._ledger_out: IO[str] | None = None
        self._ledger: deque[LedgerEntry] = deque(maxlen=self.config.ledger_max)
        self._ledger_lock = threading.Lock()
        self._served = 0
        now = self._clock.now()
        self._keys = {k.key: _KeyState(k, self.config.burst_s, now) for k in self.config.keys}
        self._open_keys = not self.config.keys
        self._fault_rng = random.Random(self.config.seed)
        self._latency_rng = random.Random(self.config.seed + 1)
        self._fault_cut = self._fault_thresholds()
        self._n_errors = 0
        self._n_malformed = 0
        self._n_answers = 0
        self._models_body = _json(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "squall-simulator"}
                    for m in self.config.models
                ],
            }
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL an OpenAI client takes as base_url: `http://127.0.0.1:PORT/v1`."""
        if not self._port:
            raise ServeError("the simulator is not started: call start() first")
        return f"http://{HOST}:{self._port}/v1"

    @property
    def port(self) -> int:
        """The port it listens on (0 before the first start)."""
        return self._port

    def start(self) -> str:
        """Serve from a background thread with its own event loop; return the base URL."""
        if self._thread is not None:
            raise ServeError("this simulator is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="squall-simulator", daemon=True)
        thread.start()
        self._thread = thread
        try:
            return asyncio.run_coroutine_threadsafe(self.astart(), loop).result(timeout=30)
        except BaseException:
            self._stop_thread(loop)
            raise

    def stop(self) -> None:
        """Stop serving and end the background thread (in-flight requests are cut off)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.astop(), loop).result(timeout=30)
        finally:
            self._stop_thread(loop)

    def _stop_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        # Handlers cancelled by astop() must finish unwinding before the loop stops, or
        # asyncio reports them as destroyed while pending (as asyncio.run avoids too).
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()
        self._thread = None
        self._loop = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def astart(self) -> str:
        """Serve on the running loop; return the base URL."""
        self._loop = asyncio.get_running_loop()
        if self._ledger_path is not None and self._ledger_out is None:
            self._ledger_out = self._ledger_path.open("a", encoding="utf-8", buffering=1)
        self._http = web.Server(self._handle, access_log=None)
        await self._listen()
        return self.base_url

    async def astop(self) -> None:
        """Stop serving on the running loop; in-flight requests get 0.2 s, then are cancelled."""
        self._close_listener()
        if self._http is not None:
            self._http.pre_shutdown()
            await self._http.shutdown(0.2)
            self._http = None
        if self._ledger_out is not None:
            self._ledger_out.close()
            self._ledger_out = None

    def pause(self) -> None:
        """Make the endpoint refuse connections: stop listening and drop open connections."""
        self._call(self.apause)

    def resume(self) -> None:
        """Listen again on the same port after `pause()`."""
        self._call(self.aresume)

    async def apause(self) -> None:
        """`pause()` for a simulator started with `astart()`, on its loop."""
        self._close_listener()
        if self._http is not None:
            for conn in self._http.connections:
                conn.force_close()

    async def aresume(self) -> None:
        """`resume()` for a simulator started with `astart()`, on its loop."""
        await self._listen()

    async def _listen(self) -> None:
        if self._listener is not None or self._http is None or self._loop is None:
            return
        try:
            # A deep accept queue, as a provider's load balancer has: with asyncio's default
            # (100), a client opening a few hundred connections at once has SYNs dropped and
            # waits out TCP's one-second retransmit, which no real provider would show.
            self._listener = await self._loop.create_server(
                self._http, HOST, self._port, backlog=1024
            )
        except OSError as e:
            raise ServeError(
                f"the simulator cannot listen on {HOST}:{self._port}: {e.strerror or e}; "
                "pick another port, or 0 for a free one"
            ) from None
        self._port = self._listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            # Closing stops accepting at once; wait_closed() would wait for every client.
            self._listener.close()
            self._listener = None

    def _call(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run coroutine function `make` on the simulator's loop and wait for it."""
        loop = self._loop
        if loop is None:
            raise ServeError("the simulator is not started: call start() first")
        if self._thread is not None and threading.current_thread() is not self._thread:
            asyncio.run_coroutine_threadsafe(make(), loop).result(timeout=30)
        else:
            raise ServeError("on the simulator's own loop, await apause()/aresume() instead")

    # -- test hooks --------------------------------------------------------------------------

    def set_key_limits(
        self,
        key: str,
        *,
        rpm: float | EllipsisType | None = ...,
        tpm: float | EllipsisType | None = ...,
        max_concurrency: int | EllipsisType | None = ...,
    ) -> None:
        """Change one key's limits from now on (None: unlimited; left out: unchanged).

        Safe to call from any thread; when it returns, the next request sees the new limits.

        Raises:
            ConfigError: `key` is not one of the configured keys.
        """
        state = self._keys.get(key)
        if state is None:
            raise ConfigError(f"set_key_limits: {mask_key(key)} is not a configured key")

        def apply() -> None:
            now = self._clock.now()
            if not isinstance(rpm, EllipsisType):
                state.set_limit("requests", rpm, self.config.burst_s, now)
            if not isinstance(tpm, EllipsisType):
                state.set_limit("tokens", tpm, self.config.burst_s, now)
            if not isinstance(max_concurrency, EllipsisType):
                state.max_concurrency = max_concurrency

        loop = self._loop
        if loop is None or not loop.is_running() or self._on_loop_thread():
            apply()
            return

        async def on_loop() -> None:
            apply()

        asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=30)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def ledger(self) -> list[LedgerEntry]:
        """Return a copy of the ledger: one entry per chat-completion request handled."""
        with self._ledger_lock:
            return list(self._ledger)

    def served_count(self) -> int:
        """Return how many complete 200 answers were written."""
        return self._served

    def in_flight(self) -> int:
        """Return the number of chat requests being handled now, over all keys."""
        return sum(s.in_flight for s in list(self._keys.values()))

    # -- request handling --------------------------------------------------------------------

    def _fault_thresholds(self) -> list[tuple[float, str]]:
        cut, total = [], 0.0
        for name in _FAULTS:
            p = getattr(self.config, name)
            if p > 0:
                total += p
                cut.append((total, name[2:]))
        return cut

    def _record(self, entry: LedgerEntry) -> None:
        with self._ledger_lock:
            self._ledger.append(entry)
            if entry.served:
                self._served += 1
        if self._ledger_out is not None:
            self._ledger_out.write(json.dumps(entry._asdict()) + "\n")

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/v1/chat/completions" and request.method == "POST":
            return await self._chat(request)
        if path == "/v1/models" and request.method == "GET":
            _, _, refusal = self._authorize(request.headers.get("Authorization", ""))
            if refusal is not None:
                return refusal
            return web.Response(body=self._models_body, content_type=_JSON)
        if path == "/_squall/ledger" and request.method == "GET":
            entries = [e._asdict() for e in self.ledger()]
            return web.Response(
                body=_json({"served_count": self._served, "entries": entries}), content_type=_JSON
            )
        return web.Response(
            status=404,
            body=_openai_error(
                f"Unknown request URL: {request.method} {path}",
                "invalid_request_error",
                "unknown_url",
            ),
            content_type=_JSON,
        )

    def _authorize(self, header: str) -> tuple[str, _KeyState | None, web.Response | None]:
        """Return the masked key, its state, and the 401/403 to send if it may not pass."""
        key = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
        state = self._keys.get(key)
        if state is None and self._open_keys:
            state = self._keys[key] = _KeyState(SimKey(key=key), self.config.burst_s, 0.0)
        masked = state.masked if state is not None else mask_key(key)
        shown = key if self.config.echo_key_in_errors else masked
        if state is None or state.dead:
            body = _openai_error(
                f"Incorrect API key provided: {shown}. You can find your API key in your "
                "dashboard.",
                "invalid_request_error",
                "invalid_api_key",
            )
            return masked, state, web.Response(status=401, body=body, content_type=_JSON)
        if state.forbidden:
            body = _openai_error(
                f"You exceeded your current quota for key {shown}, please check your plan "
                "and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            )
            return masked, state, web.Response(status=403, body=body, content_type=_JSON)
        return masked, state, None

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        call = _Call(time.monotonic(), await request.read())
        masked, state, refusal = self._authorize(request.headers.get("Authorization", ""))
        if refusal is not None:
            self._record(
                LedgerEntry(call.t0, masked, call.model, call.digest, refusal.status, False, "auth")
            )
            return refusal
        assert state is not None
        call.state = state
        if call.problem:
            return self._reply(
                call, 400, _openai_error(call.problem, "invalid_request_error", None), "bad_body"
            )
        if self.config.strict_models and call.model not in self.config.models:
            return self._reply(
                call,
                404,
                _openai_error(
                    f"The model `{call.model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
                "model",
            )

        refused = self._take(state, call.cost)
        if refused is not None:
            kind, wait = refused
            self._retry_after(call.headers, wait)
            what = "requests" if kind == "concurrency" else kind
            if kind == "concurrency" and self.config.busy_wording == "concurrency":
                message = (
                    f"Too many concurrent requests on key {state.masked}: at most "
                    f"{state.max_concurrency} at once; please try again in "
                    f"{format_duration(wait)}."
                )
            else:
                message = (
                    f"Rate limit reached for {what} on key {state.masked}: "
                    f"please try again in {format_duration(wait)}."
                )
            return self._reply(
                call,
                429,
                _json(
                    {
                        "error": {
                            "message": message,
                            "type": what,
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    }
                ),
                "concurrency" if kind == "concurrency" else "limit",
            )
        state.in_flight += 1
        call.counted = True
        try:
            return await self._answer(request, call)
        finally:
            call.release()

    def _reply(
        self, call: _Call, status: int, data: bytes, fault: str, ctype: str = _JSON
    ) -> web.Response:
        """Return an error (or malformed) response for `call`, recorded as not served."""
        assert call.state is not None
        if self.config.send_ratelimit_headers:
            call.state.ratelimit_headers(call.headers)
        self._record(
            LedgerEntry(call.t0, call.state.masked, call.model, call.digest, status, False, fault)
        )
        return web.Response(status=status, body=data, headers=call.headers, content_type=ctype)

    def _take(self, state: _KeyState, cost: int) -> tuple[str, float] | None:
        """Take one request and `cost` tokens from the key's buckets, or say why not."""
        if state.max_concurrency is not None and state.in_flight >= state.max_concurrency:
            return "concurrency", self.config.busy_retry_after_s
        requests, tokens = state.requests, state.tokens
        if requests is None and tokens is None:
            return None
        now = self._clock.now()
        if requests is not None:
            requests.refill(now)
            wait = requests.shortfall_s(1)
            if wait > 0:
                return "requests", wait
        if tokens is not None:
            tokens.refill(now)
            wait = tokens.shortfall_s(cost)
            if wait > 0:
                return "tokens", wait
            tokens.level -= cost
        if requests is not None:
            requests.level -= 1
        return None

    def _retry_after(self, headers: dict[str, str], wait: float) -> None:
        style = self.config.retry_after
        if style == "none":
            return
        if style == "date":
            headers["Retry-After"] = formatdate(math.ceil(time.time() + wait), usegmt=True)
            return
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
        if style == "ms":
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))

    def _draw_fault(self) -> str:
        if not self._fault_cut:
            return ""
        u = self._fault_rng.random()
        for cut, name in self._fault_cut:
            if u < cut:
                return name
        return ""

    async def _answer(self, request: web.BaseRequest, call: _Call) -> web.StreamResponse:
        """Return the answer to a request that passed every limit, or the fault drawn for it."""
        if call.contains("SQUALL_BAD_REQUEST"):
            return self._reply(
                call,
                400,
                _openai_error(
                    "Invalid request: the prompt asked for a bad request (SQUALL_BAD_REQUEST).",
                    "invalid_request_error",
                    None,
                    "messages",
                ),
                "bad_request",
            )
        if call.contains("SQUALL_CONTENT_FILTER"):
            return self._reply(call, 400, _CONTENT_FILTERED, "content_filter")

        fault = self._draw_fault()
        if fault == "429":
            self._retry_after(call.headers, self.config.busy_retry_after_s)
            return self._reply(
                call,
                429,
                _json(
                    {
                        "error": {
                            "message": "The server is overloaded, please retry your request later.",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    }
                ),
                "429",
            )

        delay = self.config.latency_s
        if self.config.latency_jitter_s:
            jitter = self.config.latency_jitter_s
            delay = max(0.0, delay + self._latency_rng.uniform(-jitter, jitter))
        if fault == "hang":
            delay += self.config.hang_s
        if call.contains("SQUALL_SLOW"):
            delay += self.config.slow_s
        if delay > 0:
            await asyncio.sleep(delay)

        if fault in ("500", "503"):
            data, ctype = self._error_body(int(fault))
            return self._reply(call, int(fault), data, fault, ctype)
        self._n_answers += 1
        completion = call.completion(f"chatcmpl-sim{self._n_answers:010d}")
        if fault == "malformed":
            data, ctype = self._malformed_body(completion)
            return self._reply(call, 200, data, fault, ctype)
        data = _json(completion)
        assert call.state is not None
        if self.config.send_ratelimit_headers:
            call.state.ratelimit_headers(call.headers)
        if fault == "reset":
            return await self._reset(request, call, data)

        resp = web.Response(body=data, headers=call.headers, content_type=_JSON)
        # Recorded before writing, so the ledger never lags behind what a client has read;
        # nothing between this check and the socket write yields to the loop.
        transport = request.transport
        served = transport is not None and not transport.is_closing()
        self._record(
            LedgerEntry(call.t0, call.state.masked, call.model, call.digest, 200, served, fault)
        )
        call.release()
        if served:
            with contextlib.suppress(ConnectionError):
                await resp.prepare(request)
                await resp.write_eof()
        return resp

    async def _reset(
        self, request: web.BaseRequest, call: _Call, data: bytes
    ) -> web.StreamResponse:
        """Send the headers and half the answer, then abort the connection."""
        assert call.state is not None
        self._record(
            LedgerEntry(call.t0, call.state.masked, call.model, call.digest, 200, False, "reset")
        )
        call.release()
        resp = web.StreamResponse(status=200, headers=call.headers)
        resp.content_type = _JSON
        resp.content_length = len(data)
        try:
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
        except ConnectionError:
            return resp
        if request.transport is not None:
            request.transport.abort()
        return resp

    def _error_body(self, status: int) -> tuple[bytes, str]:
        shape = self.config.error_shape
        if shape == "rotate":
            shape = _ERROR_SHAPES[self._n_errors % len(_ERROR_SHAPES)]
            self._n_errors += 1
        reason = "Internal Server Error" if status == 500 else "Service Unavailable"
        if shape == "openai":
            return _openai_error(
                "The server had an error while processing your request. Sorry about that!"
                if status == 500
                else "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
            ), _JSON
        if shape == "string":
            return _json({"error": reason}), _JSON
        if shape == "detail":
            return _json({"detail": reason}), _JSON
        if shape == "text":
            return reason.encode(), "text/plain"
        page = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return page.encode(), "text/html"

    def _malformed_body(self, completion: dict[str, Any]) -> tuple[bytes, str]:
        shape = self.config.malformed_shape
        if shape == "rotate":
            shape = _MALFORMED_SHAPES[self._n_malformed % len(_MALFORMED_SHAPES)]
            self._n_malformed += 1
        if shape == "truncated":
            data = _json(completion)
            return data[: len(data) // 2], _JSON
        if shape == "not_json":
            return b"upstream answered: OK", "text/plain"
        return _json({k: v for k, v in completion.items() if k != "choices"}), _JSON


# ---------------------------------------------------------------------------------------------
# Running it as a process


def load_config(source: str) -> SimConfig:
    """Return a config from JSON text, a JSON file's path, or "-" for JSON on stdin.

    Raises:
        ConfigError: the text or file is not a JSON object, or has unknown fields.
    """
    where = "stdin" if source == "-" else "--config"
    if source == "-":
        text = sys.stdin.read()
    elif source.lstrip().startswith("{"):
        text = source
    else:
        where = source
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read simulator config {source}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"simulator config from {where}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"simulator config from {where}: expected a JSON object")
    return SimConfig.from_dict(data)


async def _serve(config: SimConfig, port: int, ledger_file: str | None) -> None:
    sim = Simulator(config, port=port, ledger_file=ledger_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - Windows: Ctrl-C raises instead
            pass
    url = await sim.astart()
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.astop()


def main(argv: list[str] | None = None) -> int:
    """Serve a simulator until SIGTERM/SIGINT; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m squall.simulator",
        description="Serve a SIMULATED OpenAI-compatible provider on 127.0.0.1 (test equipment).",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--config",
        default=None,
        help="JSON text, a JSON file, or - for stdin (default: the demo config)",
    )
    parser.add_argument(
        "--ledger-file",
        default=None,
        help="append each handled request to this file as a JSON line",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config is not None else demo_config()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.port, args.ledger_file))
    except KeyboardInterrupt:  # pragma: no cover - only where signal handlers are unsupported
        pass
    return 0


def iter_ledger_file(path: str | Path) -> Iterator[LedgerEntry]:
    """Yield the entries a `--ledger-file` holds (a torn last line is skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                yield LedgerEntry(**json.loads(line))
            except (ValueError, TypeError):
                continue


if __name__ == "__main__":
    sys.exit(main())
