"""The run's settings, kept on a journal's first use and checked on every later one.

A journal's answers were made with its settings: a rerun with other settings is refused,
naming what changed, rather than mixing answers of two configurations in one output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputChangedError


def check_settings(
    get: Callable[[str], str | None],
    put: Callable[[Mapping[str, str]], None],
    path: Path,
    fingerprint: str,
    described: Mapping[str, Any],
    *,
    input_name: str,
    row_fingerprint: str,
) -> str:
    """Store the settings on first use, else check them; return the row fingerprint scheme.

    Stored through `put`, checked against `get`'s (see `Journal.check_settings`).

    Raises:
        InputChangedError: the settings differ from those the journal was made with.
    """
    described_json = json.dumps(dict(described), sort_keys=True, default=str)
    old_fp = get("settings_fingerprint")
    if old_fp is None:
        put(
            {
                "settings_fingerprint": fingerprint,
                "settings": described_json,
                "input_name": input_name,
                "row_fingerprint": row_fingerprint,
            }
        )
        return row_fingerprint
    scheme = get("row_fingerprint") or "1"
    if old_fp == fingerprint:
        return scheme
    old = json.loads(get("settings") or "{}")
    new = json.loads(described_json)
    changes = [
        f"{key}: {_short(old.get(key, '<unset>'))} -> {_short(new.get(key, '<unset>'))}"
        for key in sorted(set(old) | set(new))
        if old.get(key, "<unset>") != new.get(key, "<unset>")
    ] or [f"settings fingerprint: {old_fp} -> {fingerprint}"]
    raise InputChangedError(
        f"the settings changed since the journal {path} was made "
        f"({'; '.join(changes)}). Its answers were made with the old settings. "
        f"Rerun with --restart to discard the journal and start fresh, or with "
        f"--journal NEW.sqlite to keep it."
    )


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
