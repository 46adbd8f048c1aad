"""The few OpenAI-compatible calls `serve` makes itself: list models, ask one greedy question.

Plain stdlib HTTP, one request at a time: readiness polls and probes are a handful of
requests, and this keeps `serve` independent of squall's batch transport.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..errors import ServeError

_MAX_BODY = 4_000_000


@dataclass(frozen=True)
class ModelInfo:
    """One entry of `/v1/models`: its id and, for a vLLM adapter, the base it sits on."""

    id: str
    parent: str | None = None
    owned_by: str | None = None


def _error_text(body: bytes) -> str:
    """Return the message inside an engine's error body, whichever shape it uses."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:300]
    return text[:300]


def request_json(
    method: str,
    url: str,
    *,
    api_key: str | None,
    body: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> Any:
    """Return the JSON an endpoint answers to one request.

    Raises:
        ServeError: no connection, a non-2xx status (with the engine's message), or a body
            that is not JSON. The key never appears in the message.
    """
    data = json.dumps(body).encode("utf-8") if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read(_MAX_BODY)
    except urllib.error.HTTPError as e:
        detail = _error_text(e.read(_MAX_BODY))
        hint = " (is API_KEY the key the engine was started with?)" if e.code in (401, 403) else ""
        raise ServeError(f"{method} {url}: HTTP {e.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServeError(f"{method} {url}: {reason}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServeError(f"{method} {url}: the answer is not JSON: {raw[:200]!r}") from None


def list_models(base_url: str, *, api_key: str | None, timeout_s: float = 10.0) -> list[ModelInfo]:
    """Return the models `GET {base_url}/models` lists.

    Raises:
        ServeError: the request failed or the answer has no `data` list.
    """
    data = request_json("GET", f"{base_url}/models", api_key=api_key, timeout_s=timeout_s)
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ServeError(f"GET {base_url}/models: no 'data' list in the answer")
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            parent = item.get("parent")
            owner = item.get("owned_by")
            out.append(
                ModelInfo(
                    id=item["id"],
                    parent=parent if isinstance(parent, str) else None,
                    owned_by=owner if isinstance(owner, str) else None,
                )
            )
    return out


def ask(
    base_url: str,
    model: str,
    prompt: str,
    *,
    api_key: str | None,
    max_tokens: int = 24,
    timeout_s: float = 120.0,
) -> str:
    """Return the answer `model` gives to `prompt` as one user message, greedily.

    Raises:
        ServeError: the request failed or the answer holds no message text.
    """
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "seed": 0,
    }
    data = request_json(
        "POST", f"{base_url}/chat/completions", api_key=api_key, body=body, timeout_s=timeout_s
    )
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ServeError(f"{model}: the answer has no choices[0].message.content") from None
    return content if isinstance(content, str) else ""
