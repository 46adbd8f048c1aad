"""The `[[endpoints]]` block that points `squall run` and `squall eval` at a served engine.

The key is written as `${API_KEY}` (or the variable `serve` read it from), never its value:
`squall.config.load()` fills it in from `.env` or the environment when the block is used.

A local engine has no rate limit, so the block says `rpm = inf`: a run that left the limit
out would spend its first minutes discovering one, holding back an engine that answers
hundreds of requests a second. `max_concurrency` is the engine's own, where squall knows it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import OutputError


def _toml_str(value: str) -> str:
    # JSON string escaping is valid TOML basic-string escaping for everything we write.
    return json.dumps(value, ensure_ascii=False)


def endpoints_block(
    *,
    name: str,
    base_url: str,
    models: Sequence[str],
    default_model: str | None,
    key_var: str | None = "API_KEY",
    max_concurrency: int | None = None,
    comments: Sequence[str] = (),
) -> str:
    """Return an `[[endpoints]]` TOML block for one served engine.

    `models` are listed in a comment (pass one with `--model`); `default_model` becomes the
    block's `model`. `key_var` None writes a placeholder key for an engine started without one.
    """
    lines = [f"# {c}" for c in comments]
    if models:
        lines.append(f"# models served here: {', '.join(models)} (pick one with --model NAME)")
    lines.append("[[endpoints]]")
    lines.append(f"name = {_toml_str(name)}")
    lines.append(f"base_url = {_toml_str(base_url)}")
    key = f"${{{key_var}}}" if key_var else "EMPTY"
    lines.append(f"keys = [{_toml_str(key)}]")
    if default_model:
        lines.append(f"model = {_toml_str(default_model)}")
    lines.append("rpm = inf  # a local engine has no rate limit: nothing to discover")
    if max_concurrency is not None:
        lines.append(f"max_concurrency = {max_concurrency}  # requests the engine serves at once")
    return "\n".join(lines) + "\n"


def write_endpoints(path: Path, block: str) -> None:
    """Write `block` to `path` (replacing it), so `squall run -c PATH` can use it.

    Raises:
        OutputError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block, encoding="utf-8")
    except OSError as e:
        raise OutputError(
            f"cannot write {path}: {e.strerror or e}; pick another --write-endpoints"
        ) from None
