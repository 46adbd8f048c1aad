"""Equipment for end-to-end tests of the `squall` command: run it as a user does.

Each test writes real files under `tmp_path`, starts the provider simulator as its own
process (with a ledger file of everything it served), and runs `python -m squall ...` as a
subprocess with keys in environment variables. Nothing here mocks squall's HTTP layer.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squall.simulator import LedgerEntry, SimConfig, expected_answer, prompt_digest
from squall.testing import read_ledger_file, start_simulator_process, stop_process

KEY1 = "sk-live-SECRET1234567890abcd"
KEY2 = "sk-live-OTHERKEY0987654321wxyz"
DEAD_KEY = "sk-live-DEADKEY5555555555dead"
SQUALL_ENV_PREFIXES = ("SQUALL_", "OPENAI_")

# Wide enough that rich never wraps a message a test looks for.
_COLUMNS = "240"


def prompt_for(i: int) -> str:
    """Return row `i`'s prompt: unique per row, with a known arithmetic answer."""
    return f"row {i}: what is {i} + {i % 7} x 3?"


def arith_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Return `n` input rows with an id and a unique arithmetic prompt."""
    return [{"id": i, "prompt": prompt_for(i)} for i in range(start, start + n)]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write `rows` as JSON Lines to `path`; return it."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the objects of a JSON Lines file."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_config(
    path: Path,
    url: str,
    *,
    keys: Sequence[str] = ("${K1}",),
    endpoint: Mapping[str, Any] | None = None,
    **top: Any,
) -> Path:
    """Write a squall TOML config with one endpoint "sim" at `url`; return its path.

    `top` adds top-level settings; `endpoint` adds settings of the endpoint (default: no
    rate limit, so tests do not wait for squall to discover one).
    """
    lines = [f"{name} = {_toml(value)}" for name, value in top.items()]
    if "model" not in top:
        lines.append('model = "sim-model"')
    lines += [
        "[[endpoints]]",
        'name = "sim"',
        f'base_url = "{url}"',
        "keys = [" + ", ".join(_toml(k) for k in keys) + "]",
    ]
    settings = {"rpm": math.inf} if endpoint is None else endpoint
    lines += [f"{name} = {_toml(value)}" for name, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def user_env(**extra: str) -> dict[str, str]:
    """Return a clean environment for a `squall` subprocess, plus `extra` (keys, usually)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SQUALL_ENV_PREFIXES)}
    env["COLUMNS"] = _COLUMNS
    env.pop("FORCE_COLOR", None)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def squall_cmd(*args: str | Path) -> list[str]:
    """Return the command line that runs `squall ARGS` with this interpreter."""
    return [sys.executable, "-m", "squall", *(str(a) for a in args)]


def run_squall(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run `squall ARGS` in `cwd` to the end; return its exit code and output."""
    return subprocess.run(
        squall_cmd(*args),
        cwd=cwd,
        env=dict(env) if env is not None else user_env(K1=KEY1),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_squall(
    *args: str | Path, cwd: Path, env: Mapping[str, str] | None = None, log: Path
) -> subprocess.Popen[bytes]:
    """Start `squall ARGS` in `cwd` without waiting; stdout and stderr go to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            squall_cmd(*args),
            cwd=cwd,
            env=dict(env) if env is not None else user_env(K1=KEY1),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def one_line(text: str) -> str:
    """Return `text` with runs of whitespace folded to one space (rich may wrap lines)."""
    return " ".join(text.split())


@dataclass
class SimProcess:
    """A simulator running as its own process, with the ledger of what it handled."""

    proc: subprocess.Popen[str]
    url: str
    ledger_path: Path

    def ledger(self) -> list[LedgerEntry]:
        """Return every request the simulator handled so far."""
        if not self.ledger_path.exists():
            return []
        return read_ledger_file(self.ledger_path)

    def served(self) -> list[LedgerEntry]:
        """Return the requests answered with a complete 200 (the ones a provider bills)."""
        return [e for e in self.ledger() if e.served]

    def stop(self) -> None:
        """Stop the process (idempotent)."""
        stop_process(self.proc)


SimFactory = Callable[..., SimProcess]


def sim_factory(tmp_path: Path) -> tuple[SimFactory, list[SimProcess]]:
    """Return a factory of simulator processes under `tmp_path`, and the list it fills."""
    started: list[SimProcess] = []

    def make(config: SimConfig, name: str = "ledger") -> SimProcess:
        ledger = tmp_path / f"{name}-{len(started)}.jsonl"
        proc, url = start_simulator_process(config, ledger_file=ledger)
        sim = SimProcess(proc, url, ledger)
        started.append(sim)
        return sim

    return make, started


def digests_to_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Return {sha256 of prompt: row index} for rows whose prompt is the last user message."""
    return {prompt_digest(str(r["prompt"])): i for i, r in enumerate(rows)}


def assert_complete_output(
    out_rows: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Check the output holds every input row, in order, each answered with its own answer."""
    assert len(out_rows) == len(rows)
    for i, (got, want) in enumerate(zip(out_rows, rows, strict=True)):
        assert got["id"] == want["id"], f"row {i} out of order"
        assert got["prompt"] == want["prompt"]
        assert got["error"] is None, f"row {i}: {got['error']}"
        assert got["response"] == expected_answer(str(want["prompt"])), f"row {i} wrong answer"


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def count_lines(path: Path) -> int:
    """Return how many complete lines `path` holds (0 when it does not exist yet)."""
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


def iter_files(root: Path) -> Iterator[Path]:
    """Yield every file under `root`."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p
