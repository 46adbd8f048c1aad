"""Checks made before an engine starts, so a mistake fails in a second, not after a model load.

Each check raises with what to do next; soft findings come back as warning lines.
"""

from __future__ import annotations

import errno
import json
import re
import socket
from pathlib import Path

from ..errors import ConfigError, ServeError
from .spec import Adapter, ServeSpec

# A hub id is `org/name`; anything else that does not exist is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_port_free(host: str, port: int) -> None:
    """Raise ServeError when something already listens on `host:port`.

    Raises:
        ServeError: the port is taken (or cannot be bound here).
    """
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: pick a port between 1 and 65535")
    bind_host = "" if host in ("0.0.0.0", "") else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Engines (uvicorn) set SO_REUSEADDR too: a port in TIME_WAIT is free to them, and to us.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind_host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServeError(
                    f"port {port} on {host} is already in use (another server, or an engine "
                    "left running?): stop it, or pass --port with a free port"
                ) from None
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _is_local_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "\\" in text or not _HUB_ID.match(text)


def check_model(spec: ServeSpec) -> list[str]:
    """Return warnings about the base model; raise when a local path is missing.

    Raises:
        ConfigError: the base is a path that does not exist, or of the wrong kind for the engine.
    """
    path = Path(spec.model).expanduser()
    src = f"{spec.source}: model_name_or_path" if spec.source else "--model"
    if spec.engine == "llamacpp":
        if not path.is_file() or path.suffix.lower() != ".gguf":
            raise ConfigError(
                f"{src} {spec.model}: llama.cpp needs a .gguf file for the base; convert a "
                "Hugging Face folder with llama.cpp's convert_hf_to_gguf.py"
            )
        return []
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(
                f"{src} {spec.model}: not a Hugging Face model folder (no config.json in it)"
            )
        return []
    if _is_local_path(spec.model):
        raise ConfigError(
            f"{src} {spec.model}: no such folder (relative paths start at {Path.cwd()})"
        )
    return [
        f"{spec.model} is not a local folder: the engine will try to download it from the "
        "model hub, which needs network access"
    ]


def _adapter_base(adapter: Adapter) -> str | None:
    try:
        data = json.loads((adapter.path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = data.get("base_model_name_or_path") if isinstance(data, dict) else None
    return base if isinstance(base, str) and base else None


def _model_key(text: str) -> str:
    """Return the last path component, lower-cased: what a base is known by across machines."""
    return text.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1].lower()


def check_adapters(spec: ServeSpec, *, check_base: bool = True) -> list[str]:
    """Return warnings about the adapters; raise when one is missing or made for another base.

    The base check compares the adapter's `base_model_name_or_path` with the served base by
    their last path component, so `Qwen/Qwen2.5-7B-Instruct` matches `./Qwen2.5-7B-Instruct`.

    Raises:
        ConfigError: an adapter is missing, not a LoRA adapter, or trained on another base.
    """
    warnings: list[str] = []
    names = [a.name for a in spec.adapters]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"adapter names must differ, got {dupes} twice: use --lora NAME=PATH")
    if spec.adapters and spec.base_name in names:
        raise ConfigError(
            f"adapter name {spec.base_name!r} is also the base's name: rename one (--name or "
            "--lora NAME=PATH)"
        )
    for a in spec.adapters:
        where = f"adapter {a.name!r} ({a.path})"
        if spec.engine == "llamacpp":
            if not a.path.is_file() or a.path.suffix.lower() != ".gguf":
                raise ConfigError(
                    f"{where}: llama.cpp needs a GGUF LoRA file; convert the peft folder with "
                    "llama.cpp's convert_lora_to_gguf.py --base BASE_HF_FOLDER ADAPTER_FOLDER"
                )
            continue
        if not a.path.is_dir():
            raise ConfigError(f"{where}: no such folder (relative paths start at {Path.cwd()})")
        if not (a.path / "adapter_config.json").is_file():
            raise ConfigError(
                f"{where}: no adapter_config.json in it; is it a LoRA adapter folder?"
            )
        if not any(
            (a.path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")
        ):
            raise ConfigError(f"{where}: no adapter_model.safetensors or adapter_model.bin in it")
        base = _adapter_base(a)
        if base is None:
            warnings.append(f"{where}: adapter_config.json names no base model; not checked")
        elif check_base and _model_key(base) != _model_key(spec.model):
            raise ConfigError(
                f"{where} was trained on {base!r}, but the base served is {spec.model!r}. Serve "
                "it with its own base, or pass --no-base-check if they are the same model"
            )
    return warnings


def preflight(spec: ServeSpec, *, check_base: bool = True, check_port: bool = True) -> list[str]:
    """Run every check that needs no engine; return the warnings.

    Raises:
        ConfigError: a path is missing or an adapter does not fit the base.
        ServeError: the port is in use.
    """
    warnings = check_model(spec)
    warnings += check_adapters(spec, check_base=check_base)
    if check_port:
        check_port_free(spec.host, spec.port)
    return warnings
