"""LLaMA-Factory: `llamafactory-cli api CONFIG.yaml`, configured through its environment.

API_HOST, API_PORT, API_KEY, API_MODEL_NAME and MAX_CONCURRENT are set for it.

squall writes the YAML it runs (the user's keys, with flags applied) next to the log, so
the command is reproducible. LLaMA-Factory merges the adapters into the one model it
serves, under one name, and answers any model name: the bare base is not reachable beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .launch import Launch, Program, locate_program
from .spec import ServeSpec

MODULE = "llamafactory"
SCRIPT = "llamafactory-cli"
INSTALL_HINT = "llamafactory  (then remove torchvision; torchaudio must import: see docs/serve.md)"

# LLaMA-Factory's own defaults when the variable is unset: one request at a time.
_HF_DEFAULT_CONCURRENCY = 4
_BACKENDS = ("huggingface", "vllm", "sglang", "ktransformers")


def locate(python: str | None) -> Program:
    """Return where LLaMA-Factory is installed (see `locate_program`)."""
    return locate_program(
        module=MODULE, script=SCRIPT, python=python, install_hint=INSTALL_HINT, what="LLaMA-Factory"
    )


def served_name(spec: ServeSpec) -> str:
    """Return the one model name LLaMA-Factory will list: --name, else the adapters' names."""
    if spec.name:
        return spec.name
    if spec.adapters:
        return "+".join(a.name for a in spec.adapters)
    return spec.base_name


def config_yaml(spec: ServeSpec, backend: str) -> str:
    """Return the YAML LLaMA-Factory runs: the user's keys, with squall's flags applied.

    Without PyYAML (the `serve` extra) it is written as JSON, which is YAML too: serving from
    flags needs no extra.
    """
    data: dict[str, Any] = {"model_name_or_path": spec.model}
    if spec.adapters:
        data["adapter_name_or_path"] = ",".join(str(a.path) for a in spec.adapters)
        data["finetuning_type"] = "lora"
    for key, value in spec.options.items():
        data.setdefault(key, value)
    data["template"] = spec.template
    data["infer_backend"] = backend
    try:
        import yaml
    except ImportError:
        return json.dumps(data, indent=2, default=str) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def plan(spec: ServeSpec, program: Program, api_key: str | None, workdir: Path) -> Launch:
    """Return the LLaMA-Factory command serving `spec` with its adapters merged in.

    Raises:
        ConfigError: no chat template, or an unknown `infer_backend`.
    """
    if not spec.template:
        raise ConfigError(
            "LLaMA-Factory needs the chat template the adapter was trained with: pass "
            "--template (qwen, llama3, smollm2, ...) or set template: in the YAML"
        )
    backend = spec.infer_backend or "huggingface"
    if backend not in _BACKENDS:
        raise ConfigError(f"infer_backend {backend!r}: LLaMA-Factory knows {', '.join(_BACKENDS)}")
    name = served_name(spec)
    config = workdir / f"llamafactory-{spec.port}.yaml"
    if program.script:
        argv = [program.script, "api", str(config)]
    else:
        assert program.python is not None  # locate_program returns one or the other
        argv = [
            program.python,
            "-c",
            "from llamafactory.cli import main; main()",
            "api",
            str(config),
        ]
    argv += list(spec.extra_args)
    env = {"API_HOST": spec.host, "API_PORT": str(spec.port), "API_MODEL_NAME": name}
    notes = [
        f"LLaMA-Factory merges the adapter at load and serves one model, {name!r}; it answers "
        "any model name, and the bare base cannot be asked beside it",
    ]
    # The vllm and sglang backends batch as their engine is set up inside LLaMA-Factory, which
    # squall does not see: their [[endpoints]] block leaves max_concurrency to squall's default.
    concurrency: int | None = None
    if backend == "huggingface":
        concurrency = spec.max_concurrent or _HF_DEFAULT_CONCURRENCY
        env["MAX_CONCURRENT"] = str(concurrency)
        notes.append(
            "LLaMA-Factory's huggingface backend answers one request at a time unless "
            f"MAX_CONCURRENT is raised: squall sets MAX_CONCURRENT={concurrency} (--max-concurrent)"
        )
    elif backend == "vllm":
        notes.append(
            "LLaMA-Factory's vllm backend applies only the first adapter and ignores the "
            "request's model; it needs vllm 0.11.0 or older. For several adapters use "
            "--engine vllm"
        )
        if len(spec.adapters) > 1:
            raise ConfigError(
                "LLaMA-Factory's vllm backend applies only the first adapter, so "
                f"{', '.join(a.name for a in spec.adapters[1:])} would be silently ignored: "
                "serve them with --engine vllm (each by its own name)"
            )
    if len(spec.adapters) > 1 and backend != "vllm":
        notes.append(
            f"LLaMA-Factory merges all {len(spec.adapters)} adapters into one model; for each "
            "on its own, use --engine vllm"
        )
    if api_key:
        env["API_KEY"] = api_key
    else:
        notes.append("LLaMA-Factory: no API key, so anyone who reaches the port can use it")
    return Launch(
        engine="llamafactory",
        argv=tuple(argv),
        env=env,
        secret_env=frozenset({"API_KEY"}),
        files={config: config_yaml(spec, backend)},
        base_url=spec.base_url,
        base_name=None if spec.adapters else name,
        model_names=(name,),
        adapter_names=(name,) if spec.adapters else (),
        answers_any_name=True,
        max_concurrency=concurrency,
        notes=tuple(notes),
    )
