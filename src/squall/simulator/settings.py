"""The simulator's settings: its keys (`SimKey`), its behaviour (`SimConfig`), and loading them.

Both are frozen values that travel as plain data (`SimConfig.to_dict()` / `from_dict()`), which
is how `python -m squall.simulator --config` and `squall.testing.start_simulator_process` get
them. `load_config()` is the one place that reads a config from text, a file or stdin.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import ConfigError
from ..redact import mask_key

RetryAfterStyle = Literal["seconds", "ms", "date", "none"]
ErrorShape = Literal["rotate", "openai", "string", "detail", "text", "html"]
MalformedShape = Literal["rotate", "truncated", "not_json", "no_choices"]
BusyWording = Literal["concurrency", "rate"]
LimitMode = Literal["bucket", "sliding"]

FAULTS: tuple[str, ...] = ("p_429", "p_500", "p_503", "p_reset", "p_malformed", "p_hang")


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
        limit_mode: how `rpm` and `tpm` are enforced: "bucket" (token buckets
            `SimConfig.burst_s` deep) or "sliding" (any `window_s` seconds hold at most
            `limit * window_s / 60` requests or tokens, as providers that count in a sliding
            window do).
        window_s: the sliding window's length in seconds (used in "sliding" mode only).
    """

    key: str
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None
    dead: bool = False
    forbidden: bool = False
    limit_mode: LimitMode = "bucket"
    window_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrency"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"SimKey {self.masked}: {name} must be above 0 or None")
        if self.limit_mode not in get_args(LimitMode):
            raise ConfigError(
                f"SimKey {self.masked}: limit_mode must be one of {get_args(LimitMode)}"
            )
        if not self.window_s > 0:
            raise ConfigError(f"SimKey {self.masked}: window_s must be above 0")

    @property
    def masked(self) -> str:
        """The key as it may be shown: `sk-...abcd`."""
        return mask_key(str(self.key))

    def __repr__(self) -> str:
        return (
            f"SimKey(key={self.masked!r}, rpm={self.rpm}, tpm={self.tpm}, "
            f"max_concurrency={self.max_concurrency}, dead={self.dead}, "
            f"forbidden={self.forbidden}, limit_mode={self.limit_mode!r}, "
            f"window_s={self.window_s})"
        )


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    """How the simulated Batch API (/v1/files, /v1/batches) paces and breaks its batches.

    Every duration is in nominal seconds and multiplied by `time_scale` before it is slept,
    so `time_scale=0.001` runs a "24 hour" batch in 86 s and a test's batch in milliseconds;
    except the three `*_delay_s`, which are REAL seconds, never scaled: they model a slow
    network, not batch time, and hold a request open so a test can kill its client mid-way.

    Attributes:
        validating_s: how long a batch stays in "validating" before its lines are checked.
        line_s: how long each line takes in "in_progress" (lines are answered one by one).
        finalizing_s: how long a batch stays in "finalizing" before its files are written.
        cancelling_s: how long a cancelled batch stays in "cancelling".
        expire_after_s: a batch not finished this long after its creation ends "expired"
            (OpenAI: 24 h); its finished lines are kept, the rest fail with batch_expired.
        time_scale: multiplies every duration above (1.0: real time).
        p_fail: chance that a batch fails in "validating" though its file is fine (a batch
            whose metadata holds `squall_fault: "fail"` always does).
        upload_delay_s: real seconds POST /v1/files holds an upload after its whole body
            arrived, before storing it and recording "file_upload"; a client gone by then
            leaves no file and no ledger entry.
        create_reply_delay_s: real seconds POST /v1/batches waits before replying, after the
            batch was created, recorded ("batch_create") and set running: a client killed
            meanwhile never learns its id, yet the batch is listed by GET /v1/batches.
        content_delay_s: real seconds GET /v1/files/{id}/content waits before sending the
            bytes (and recording "file_download"); a client gone by then is sent nothing.
    """

    validating_s: float = 1.0
    line_s: float = 0.05
    finalizing_s: float = 1.0
    cancelling_s: float = 1.0
    expire_after_s: float = 86_400.0
    time_scale: float = 1.0
    p_fail: float = 0.0
    upload_delay_s: float = 0.0
    create_reply_delay_s: float = 0.0
    content_delay_s: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"SimConfig.batches.{field.name} must be a number, 0 or more")
        if not self.p_fail <= 1.0:
            raise ConfigError("SimConfig.batches.p_fail must be between 0 and 1")

    def seconds(self, nominal: float) -> float:
        """Return the real seconds `nominal` seconds take under `time_scale`."""
        return nominal * self.time_scale


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
        batches: how the Batch API paces and breaks batches (`BatchSettings`).
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
    batches: BatchSettings = BatchSettings()

    def __post_init__(self) -> None:
        probabilities = [getattr(self, name) for name in FAULTS]
        for name, p in zip(FAULTS, probabilities, strict=True):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"SimConfig.{name} must be between 0 and 1, got {p}")
        if sum(probabilities) > 1.0 + 1e-9:
            raise ConfigError(f"SimConfig: the fault probabilities {FAULTS} add up to above 1")
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
            if isinstance(values.get("batches"), Mapping):
                values["batches"] = BatchSettings(**values["batches"])
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
