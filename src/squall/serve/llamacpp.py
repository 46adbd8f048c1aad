"""llama.cpp through llama-cpp-python's server: a GGUF base plus GGUF LoRA files, on CPU.

squall writes a `--config_file` with one model entry for the base and one per adapter
(the same base file with `lora_path`), so each is asked by its own name. The server keeps
one model in memory and reloads when a request names another, and it answers any unknown
name with the first model (the base). The file holds the API key: it is written 0600 and
removed when the engine stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .launch import Launch, Program, locate_program
from .spec import ServeSpec

MODULE = "llama_cpp"
SCRIPT = None
INSTALL_HINT = '"llama-cpp-python[server]"  (builds llama.cpp: a few minutes)'


def locate(python: str | None) -> Program:
    """Return where llama-cpp-python is installed (see `locate_program`)."""
    return locate_program(
        module=MODULE, script=SCRIPT, python=python, install_hint=INSTALL_HINT, what="llama.cpp"
    )


def config_json(spec: ServeSpec, api_key: str | None) -> str:
    """Return llama-cpp-python's server config: the base first, then one entry per adapter."""
    common: dict[str, Any] = {"model": str(Path(spec.model).expanduser())}
    for key in ("n_ctx", "n_threads", "chat_format", "n_batch"):
        if key in spec.options:
            common[key] = spec.options[key]
    models = [{**common, "model_alias": spec.base_name}]
    models += [{**common, "model_alias": a.name, "lora_path": str(a.path)} for a in spec.adapters]
    data: dict[str, Any] = {"host": spec.host, "port": spec.port, "models": models}
    if api_key:
        data["api_key"] = api_key
    return json.dumps(data, indent=2)


def plan(spec: ServeSpec, program: Program, api_key: str | None, workdir: Path) -> Launch:
    """Return the llama-cpp-python server command serving the base and each adapter by name."""
    assert program.python is not None  # llama-cpp-python has no console script: run its module
    config = workdir / f"llamacpp-{spec.port}.json"
    argv = [program.python, "-m", "llama_cpp.server", "--config_file", str(config)]
    argv += list(spec.extra_args)
    notes = [
        "llama.cpp answers any model name (unknown names get the base) and holds one model at a "
        "time: alternating base and adapter requests reload the weights each time",
        "llama.cpp on some CPUs crashed on the first request with repacked weight buffers; if "
        "the log shows a crash in ggml's repack code, try another llama-cpp-python build",
    ]
    if not api_key:
        notes.append("llama.cpp: no API key, so anyone who reaches the port can use it")
    return Launch(
        engine="llamacpp",
        argv=tuple(argv),
        files={config: config_json(spec, api_key)},
        secret_files=frozenset({config}) if api_key else frozenset(),
        base_url=spec.base_url,
        base_name=spec.base_name,
        model_names=(spec.base_name, *(a.name for a in spec.adapters)),
        adapter_names=tuple(a.name for a in spec.adapters),
        answers_any_name=True,
        # llama-cpp-python's server holds a lock around its one model: one request at a time.
        max_concurrency=1,
        notes=tuple(notes),
    )
