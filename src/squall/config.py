"""Settings: frozen values, loaded in one place.

`load()` is the only code that reads config files, `.env` and `os.environ`.
Precedence: CLI flag > config file > environment > default.

Limits: `rpm`/`tpm` left out mean "find them" (grow until 429s, settle just under);
a number is the limit; `inf` (TOML's own infinity) means unlimited.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from .errors import ConfigError
from .redact import ApiKey

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_CONCURRENCY = 64
Api = Literal["chat", "completions", "embeddings"]
"""The request kinds a run may send (squall.operations names them)."""
_LIMIT_FLAGS = (("rpm", "rpm"), ("tpm", "tpm"), ("concurrency", "max_concurrency"))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class KeyConfig(_Frozen):
    """One API key and, optionally, limits of its own (else the endpoint's)."""

    key: ApiKey
    name: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: Annotated[int | None, Field(ge=1)] = None

    @field_validator("key", mode="before")
    @classmethod
    def _wrap(cls, v: object) -> ApiKey:
        if isinstance(v, ApiKey):
            return v
        if not isinstance(v, str):
            raise ValueError("a key must be a string")
        return ApiKey(v)

    @field_serializer("key")
    def _ser_key(self, v: ApiKey) -> str:
        return v.masked


class EndpointConfig(_Frozen):
    """One OpenAI-compatible base URL with its keys; limits here are each key's default."""

    name: str
    base_url: str
    keys: tuple[KeyConfig, ...] = (KeyConfig(key=ApiKey("EMPTY")),)
    model: str | None = None
    api: Api | None = None
    """The request kind this endpoint takes; unset: the run's (one kind a run, for now)."""
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: Annotated[int, Field(ge=1)] = DEFAULT_CONCURRENCY
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("keys", mode="before")
    @classmethod
    def _keys(cls, v: object) -> object:
        if isinstance(v, (list, tuple)):
            return tuple({"key": k} if isinstance(k, (str, ApiKey)) else k for k in v)
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("rpm", "tpm")
    @classmethod
    def _limit(cls, v: float | None) -> float | None:
        if v is not None and not (v > 0):
            raise ValueError("a limit must be above 0 (leave it out to discover it, inf for none)")
        return v


class Price(_Frozen):
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0
    batch: float = Field(default=0.5, ge=0.0, le=1.0)
    """The share of these prices the provider's Batch API charges (OpenAI: half)."""


class RetryConfig(_Frozen):
    """How hard to try before a row is recorded as failed."""

    max_attempts: int = 8
    """Tries per row for faults (5xx, timeouts, resets, bad bodies)."""
    max_rate_limited: int = 100
    """429s per row: they only say 'wait', so they have a budget of their own."""
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0


class RunConfig(_Frozen):
    """Everything one run needs besides its input and output."""

    model: str | None = None
    api: Api = "chat"
    """The request kind sent: chat, completions or embeddings (batch lines: their `url`)."""
    endpoints: tuple[EndpointConfig, ...] = ()
    prices: dict[str, Price] = Field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    """Extra fields for each request body (top_p, response_format, ...)."""
    retry: RetryConfig = RetryConfig()
    max_cost: float | None = None
    window: int = 2048
    """Rows read ahead of the sender: bounds memory whatever the input's size."""
    journal_sync: Literal["normal", "full"] = "normal"
    progress: Literal["auto", "rich", "plain", "off"] = "auto"
    unreachable_after_s: float = 300.0
    """Stop (cleanly, resumable) once every endpoint has refused connections this long."""
    grace_s: float = 5.0
    """After Ctrl-C: how long in-flight requests get to land."""
    embeddings_max_inputs: int = Field(default=512, ge=1, le=2048)
    """Embeddings: the most rows packed into one request (the API takes up to 2048)."""
    embeddings_max_tokens: int = Field(default=100_000, ge=1)
    """Embeddings: the most estimated tokens packed into one request (a row over it goes
    alone)."""
    batch_api: bool = False
    """Send through the provider's own Batch API (/v1/files, /v1/batches): its price share
    (`Price.batch`), answers within 24 h."""
    batch_fallback: Literal["none", "online"] = "none"
    """Rows a batch left when it ended expired, failed or cancelled: submitted again in a
    new batch ("none", up to 3 passes a run), or sent online through the pool at once
    ("online")."""
    batch_poll_s: float = Field(default=60.0, gt=0.0)
    """Seconds between polls of a live batch (backing off to 10x while nothing changes)."""
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000)
    """The most lines in one batch input file (OpenAI: 50,000)."""
    batch_max_bytes: int = Field(default=200_000_000, ge=1_000)
    """The most bytes in one batch input file (OpenAI: 200 MB)."""
    ray: str | None = None
    """Run on Ray (`pip install "squall[ray]"`): "local" starts a Ray instance here, "auto"
    joins the running cluster, or a cluster address (`ray://head:10001`)."""
    workers: int | None = Field(default=None, ge=1)
    """Ray workers (default: the cluster's CPUs, at most 8)."""

    def model_for(self, endpoint: EndpointConfig) -> str:
        """Return the model name to send to `endpoint`."""
        model = endpoint.model or self.model
        if not model:
            raise ConfigError(
                f"no model for endpoint {endpoint.name!r}: set `model` at the top of the config, "
                "in its [[endpoints]] block, or pass --model"
            )
        return model

    def price_for(self, model: str) -> Price | None:
        """Return the price of `model`, if [prices] has it."""
        return self.prices.get(model)


def expand_env(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace `${NAME}` (or `${NAME:-default}`) in every string inside `value`.

    Raises:
        ConfigError: naming every unset variable, and where each is used.
    """
    missing: list[tuple[str, str]] = []
    expanded = _expand(value, env, where, missing)
    if missing:
        raise ConfigError("; ".join(_unset_message(w, name) for w, name in missing))
    return expanded


def _expand(value: Any, env: Mapping[str, str], where: str, missing: list[tuple[str, str]]) -> Any:
    """expand_env's walk: an unset variable is left as it is written and noted in `missing`."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((where, name))
            return m.group(0)

        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _expand(v, env, f"{where}.{k}" if where else k, missing) for k, v in value.items()
        }
    return value


def _unset_message(where: str, name: str) -> str:
    return f"{where or 'config'}: ${{{name}}} is not set; put {name}=... in .env or export it"


def read_environment(env_file: str | Path | None = None) -> dict[str, str]:
    """Return os.environ overlaid on `.env` (the real environment wins, as python-dotenv does)."""
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ)
    return merged


def _explain(err: ValidationError, skip: Collection[str] = ()) -> list[str]:
    """One line per fault; none for a fault under a setting in `skip` (where expand_env wrote)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(
                f"unknown setting {loc!r}: check its spelling (see README: Run your own batch)"
            )
        elif not any(_under(_where(e["loc"]), where) for where in skip):
            lines.append(f"{loc}: {e['msg']}")
    return lines


def _under(where: str, parent: str) -> bool:
    return where == parent or where.startswith((f"{parent}.", f"{parent}["))


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as expand_env writes it: endpoints[0].base_url."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def load(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> RunConfig:
    """Return the run's settings from a TOML file, the environment and flag overrides.

    `overrides` holds CLI flags (only those given): `model`, `api`, `template`, `system`,
    `max_tokens`, `temperature`, `max_cost`, and for endpoints `base_url`, `key_env`
    (a list of variable names), `rpm`, `tpm`, `concurrency`.

    Raises:
        ConfigError: the file is unreadable, has unknown keys, or a variable is unset (every
            unset variable and every bad setting in the file at once).
    """
    environ = dict(env) if env is not None else read_environment()
    source = "defaults" if path is None else str(Path(path))
    missing: list[tuple[str, str]] = []
    data: dict[str, Any] = {}
    if path is not None:
        data = _expand(_read_toml(Path(path)), environ, "", missing)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}

    # Environment sits under the file: it only fills what the file leaves out.
    if "model" not in data and environ.get("SQUALL_MODEL"):
        data["model"] = environ["SQUALL_MODEL"]

    endpoint_flags = _take(flags, ("base_url", "key_env"))
    limit_flags = _take(flags, ("rpm", "tpm", "concurrency"))
    data.update(flags)
    _apply_endpoint_flags(data, endpoint_flags, environ)
    _apply_limit_flags(data, limit_flags)
    return _validate(data, source, missing)


def _take(flags: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Remove `names` from `flags` and return them."""
    return {k: flags.pop(k) for k in names if k in flags}


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 at byte {e.start}; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return data


def _apply_endpoint_flags(
    data: dict[str, Any], endpoint_flags: Mapping[str, Any], environ: Mapping[str, str]
) -> None:
    """--base-url and --key-env (else the environment's base URL) as the one endpoint."""
    if "base_url" in endpoint_flags or not data.get("endpoints"):
        base_url = (
            endpoint_flags.get("base_url")
            or environ.get("SQUALL_BASE_URL")
            or environ.get("OPENAI_BASE_URL")
        )
        if base_url:
            names = (
                endpoint_flags.get("key_env")
                or [n for n in ("SQUALL_API_KEY", "OPENAI_API_KEY", "API_KEY") if n in environ][:1]
            )
            keys = []
            for n in names:
                if n not in environ:
                    raise ConfigError(
                        f"--key-env {n}: the variable {n} is not set (.env or export)"
                    )
                keys.append(environ[n])
            data["endpoints"] = [
                {"name": "default", "base_url": base_url, "keys": keys or ["EMPTY"]}
            ]
    elif "key_env" in endpoint_flags:
        raise ConfigError("--key-env needs --base-url (or set keys in the config's [[endpoints]])")


def _apply_limit_flags(data: dict[str, Any], limit_flags: Mapping[str, Any]) -> None:
    """--rpm, --tpm and --concurrency: on every endpoint, and on every key that sets its own."""
    if not limit_flags:
        return
    for ep in data.get("endpoints", []):
        for src, dst in _LIMIT_FLAGS:
            if src in limit_flags:
                ep[dst] = limit_flags[src]
        for k in ep.get("keys", []):
            if isinstance(k, dict):
                for src, dst in _LIMIT_FLAGS:
                    if src in limit_flags:
                        k[dst] = limit_flags[src]


def _validate(data: dict[str, Any], source: str, missing: list[tuple[str, str]]) -> RunConfig:
    """Return `data` as a RunConfig, or raise one ConfigError naming every fault at once."""
    for i, ep in enumerate(data.get("endpoints", []) or []):
        if isinstance(ep, dict):
            ep.setdefault("name", f"endpoint{i + 1}")
    faults = [_unset_message(where, name) for where, name in missing]
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        # A setting whose variable is unset is already reported as that: not also as a bad value.
        unset = {where for where, _ in missing}
        faults += _explain(e, skip=unset)
        raise ConfigError(f"{source}: " + "; ".join(faults)) from None
    if faults:
        raise ConfigError(f"{source}: " + "; ".join(faults))
    names = [ep.name for ep in cfg.endpoints]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: endpoint names must differ, got {names}")
    for ep in cfg.endpoints:
        for k in ep.keys:
            if k.rpm is not None and k.rpm <= 0:
                raise ConfigError(f"{source}: endpoint {ep.name!r}: a key's rpm must be above 0")
    return cfg


def with_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Return `cfg` with `overrides` (RunConfig fields; None: not given) validated on top.

    Raises:
        ConfigError: an override has the wrong type or value (`max_tokens="lots"`).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return cfg
    # The fields as they are (already-validated values, keys unmasked), then the overrides:
    # validated like a file's settings, not pasted in unchecked as model_copy(update=) would.
    fields = {name: getattr(cfg, name) for name in type(cfg).model_fields}
    try:
        return RunConfig.model_validate({**fields, **given})
    except ValidationError as e:
        raise ConfigError("settings: " + "; ".join(_explain(e))) from None


def require_endpoints(cfg: RunConfig) -> None:
    """Raise ConfigError unless `cfg` names at least one endpoint."""
    if not cfg.endpoints:
        raise ConfigError(
            "no endpoint: pass --base-url URL (and --key-env NAME), add [[endpoints]] to a "
            "config file (-c squall.toml), or set OPENAI_BASE_URL; `squall demo` starts a "
            "local practice endpoint"
        )


def is_unlimited(limit: float | None) -> bool:
    """True when a limit is declared as `inf`."""
    return limit is not None and math.isinf(limit)
