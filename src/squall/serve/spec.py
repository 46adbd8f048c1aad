"""What to serve: a base model, its LoRA adapters, the engine and the address.

A `ServeSpec` comes from the seed's LLaMA-Factory YAML (`load_yaml_spec`), from flags
(`ServeSpec(...)` plus `parse_lora`), or from both (flags replace the YAML's values).
Nothing here touches the network or starts a process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from ..errors import ConfigError, MissingExtraError

EngineName = Literal["vllm", "llamafactory", "llamacpp"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)

# Model names travel in JSON bodies and TOML; keep them to characters every engine accepts.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")

# Keys of LLaMA-Factory's YAML that squall reads itself; every other key is passed through.
_YAML_MODEL = "model_name_or_path"
_YAML_ADAPTER = "adapter_name_or_path"


@dataclass(frozen=True)
class Adapter:
    """One LoRA adapter: the model name clients send, and where its weights are."""

    name: str
    path: Path


@dataclass(frozen=True, kw_only=True)
class ServeSpec:
    """Everything needed to start one engine serving a base model and its adapters."""

    engine: EngineName
    model: str
    """The base: a local directory (GGUF file for llama.cpp), or a hub id the engine downloads."""
    adapters: tuple[Adapter, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None
    """The model name clients send for the base (LLaMA-Factory: for the merged model)."""
    template: str | None = None
    """LLaMA-Factory's chat template (`qwen`, `smollm2`, ...)."""
    infer_backend: str | None = None
    """LLaMA-Factory's backend: `huggingface` (default here), `vllm` or `sglang`."""
    max_concurrent: int | None = None
    """LLaMA-Factory's MAX_CONCURRENT: requests it works on at once."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The YAML's other keys: passed to LLaMA-Factory as they are; vllm_* keys also map to vLLM."""
    extra_args: tuple[str, ...] = ()
    """Flags appended to the engine's command line as given."""
    source: Path | None = None
    """The YAML this spec was read from, for messages."""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL the engine will answer on."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    @property
    def base_name(self) -> str:
        """The name clients send for the base model."""
        if self.name:
            return self.name
        tail = self.model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
        if self.engine == "llamacpp" and tail.lower().endswith(".gguf"):
            tail = tail[: -len(".gguf")]
        return tail or "base"


def adapter_name_from_path(path: str) -> str:
    """Return the model name an adapter gets when none is given: its folder's (or file's) name."""
    tail = path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    if tail.lower().endswith(".gguf"):
        tail = tail[: -len(".gguf")]
    return tail


def parse_lora(text: str) -> Adapter:
    """Return the adapter named by a `--lora` value: `NAME=PATH`, or a bare `PATH`.

    Raises:
        ConfigError: the name is empty or has characters engines reject.
    """
    name, sep, path = text.partition("=")
    if not sep or "/" in name or "\\" in name:
        # A bare path (which may itself hold '=' after a slash): name it after its folder.
        name, path = adapter_name_from_path(text), text
    if not path:
        raise ConfigError(f"--lora {text!r}: no path after '='; use --lora NAME=PATH")
    check_name(name, f"--lora {text!r}")
    return Adapter(name=name, path=Path(path).expanduser())


def check_name(name: str, where: str) -> None:
    """Raise ConfigError unless `name` is a model name every engine accepts."""
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: model name {name!r} must start with a letter or digit and hold only "
            "letters, digits and _ . : + -"
        )


def parse_engine(value: str, where: str = "--engine") -> EngineName:
    """Return `value` as an engine name.

    Raises:
        ConfigError: not one of vllm, llamafactory, llamacpp.
    """
    low = value.strip().lower().replace("-", "").replace("_", "")
    aliases = {
        "llamafactorycli": "llamafactory",
        "llamacpppython": "llamacpp",
        "llama.cpp": "llamacpp",
    }
    low = aliases.get(low, low)
    if low not in ENGINE_NAMES:
        raise ConfigError(
            f"{where}: unknown engine {value!r}; choose one of {', '.join(ENGINE_NAMES)}"
        )
    return cast(EngineName, low)


def _line_of(text: str, key: str) -> int | None:
    """Return the 1-based line where top-level `key` sits in YAML `text`, if found."""
    pattern = re.compile(rf"^{re.escape(key)}\s*:", re.MULTILINE)
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def load_yaml_spec(path: str | Path) -> ServeSpec:
    """Return the spec a LLaMA-Factory inference YAML describes (the seed's `vllm_api.yaml`).

    The engine defaults to LLaMA-Factory, as `llamafactory-cli api` would run it. Relative
    adapter paths stay relative to the working directory, as LLaMA-Factory reads them.

    Raises:
        MissingExtraError: PyYAML is not installed.
        ConfigError: the file is unreadable, not a mapping, or lacks `model_name_or_path`.
    """
    try:
        import yaml
    except ImportError:
        raise MissingExtraError("reading a LLaMA-Factory YAML", "serve", "pyyaml") from None
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{p}, line {mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{at}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: expected keys like model_name_or_path: ..., got {type(data).__name__}"
        )

    def where(key: str) -> str:
        line = _line_of(text, key)
        return f"{p}, line {line}, field {key!r}" if line else f"{p}, field {key!r}"

    model = data.get(_YAML_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(
            f"{where(_YAML_MODEL)}: missing; set it to the base model's folder or hub id"
        )

    adapters: list[Adapter] = []
    raw = data.get(_YAML_ADAPTER)
    if raw is not None:
        if isinstance(raw, str):
            paths = [s.strip() for s in raw.split(",") if s.strip()]
        elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            paths = [s.strip() for s in raw]
        else:
            raise ConfigError(f"{where(_YAML_ADAPTER)}: expected a path or comma-separated paths")
        for ap in paths:
            name = adapter_name_from_path(ap)
            check_name(name, where(_YAML_ADAPTER))
            adapters.append(Adapter(name=name, path=Path(ap).expanduser()))
        ft = data.get("finetuning_type", "lora")
        if ft != "lora":
            raise ConfigError(
                f"{where('finetuning_type')}: {ft!r} with an adapter; squall serves LoRA adapters "
                "only (finetuning_type: lora)"
            )

    template = data.get("template")
    backend = data.get("infer_backend")
    options = {k: v for k, v in data.items() if k not in (_YAML_MODEL, _YAML_ADAPTER)}
    return ServeSpec(
        engine="llamafactory",
        model=model.strip(),
        adapters=tuple(adapters),
        template=str(template) if template is not None else None,
        infer_backend=str(backend) if backend is not None else None,
        options=options,
        source=p,
    )
