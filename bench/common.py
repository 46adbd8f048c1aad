"""Shared equipment for the benchmarks: servers, inputs, child processes and result tables.

Every contender runs in a child process of its own (`python bench/clients.py`), so each one's
CPU time and peak memory are its own (`os.wait4` gives the child's rusage), and the servers run
in further processes, never counted against a client.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
CLIENTS = BENCH / "clients.py"


# ---------------------------------------------------------------------------------------------
# The machine


def machine_note() -> str:
    """Return one line saying what this machine is and how busy it was when the run began."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    psi = ""
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as f:
            some = f.readline().split()
        psi = f", CPU pressure (some, avg60) {some[2].split('=')[1]}%"
    except (OSError, IndexError):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), load average {load}{psi} at start, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def cpu_pressure_us() -> int | None:
    """Return the kernel's total microseconds that some task waited for a CPU (Linux PSI)."""
    try:
        with open("/proc/pressure/cpu", encoding="utf-8") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Inputs


def prompt_for(index: int, rng: random.Random) -> str:
    """Return a short arithmetic prompt, unique per row (the simulator can check its answer)."""
    return f"计算 {index} + {rng.randint(1, 100)} x {rng.randint(1, 9)} 的结果"


def write_prompts(path: Path, n: int, seed: int = 0) -> Path:
    """Write `n` rows `{"id": i, "prompt": ...}` to the JSONL file `path` (once: reused if the
    file already holds exactly `n` rows from this seed); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = path.with_name(path.name + ".stamp")
    want = f"{n}:{seed}"
    if path.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == want:
        return path
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        buf: list[str] = []
        for i in range(n):
            buf.append(json.dumps({"id": i, "prompt": prompt_for(i, rng)}, ensure_ascii=False))
            if len(buf) >= 10_000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")
    tmp.replace(path)
    stamp.write_text(want, encoding="utf-8")
    return path


def iter_prompts(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (row index, prompt) from a JSONL file written by `write_prompts`, streaming."""
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            yield i, json.loads(line)["prompt"]


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    """A server process on 127.0.0.1 and its base URL."""

    proc: subprocess.Popen[str]
    base_url: str

    def stop(self) -> None:
        """SIGTERM the server, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_lean_server(timeout_s: float = 20.0) -> Server:
    """Start `bench/leanserver.py` (zero latency, no limits) in its own process."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "leanserver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = _first_line(proc, timeout_s)
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"bench/leanserver.py printed no URL within {timeout_s:g} s")
    return Server(proc, url.strip())


def start_simulator(config: Any, ledger: Path, timeout_s: float = 30.0) -> Server:
    """Start squall's provider simulator with `config` (a SimConfig) in its own process.

    Like `squall.testing.start_simulator_process`, but the server's stderr goes to
    `LEDGER.stderr.log`, so the tracebacks it logs when a client is killed mid-request do not
    clutter the benchmark's output.
    """
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.unlink(missing_ok=True)
    log = ledger.with_name(ledger.name + ".stderr.log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "squall.simulator",
        "--port",
        "0",
        "--config",
        "-",
        "--ledger-file",
        str(ledger),
    ]
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(config.to_dict()))
    proc.stdin.close()
    url = _first_line(proc, timeout_s)
    if not url.startswith("http://"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the simulator printed no URL within {timeout_s:g} s: see {log}")
    return Server(proc, url.strip())


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    box: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        box.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0] if box else ""


# ---------------------------------------------------------------------------------------------
# Child processes


@dataclass
class ChildResult:
    """What a child process left: its exit code, its JSON report and its rusage."""

    argv: list[str]
    rc: int
    report: dict[str, Any]
    wall_s: float
    cpu_s: float
    """User + system CPU of the whole child process (startup and imports included)."""
    maxrss_mb: float
    stdout: str
    stderr: str
    killed: bool = False
    cpu_pressure_pct: float | None = None
    """Share of the run's wall time during which some task on the machine waited for a CPU
    (PSI "some"): above a few percent, other work competed with the benchmark."""

    @property
    def command(self) -> str:
        """The child's command line, for the README."""
        return shlex.join(self.argv)


def run_child(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ChildResult:
    """Run `argv` to its end (SIGKILL after `timeout_s`); return its report and rusage.

    The report is the last stdout line that parses as a JSON object (empty if none).
    """
    OUT.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    out_path, err_path = OUT / f".child-{tag}.out", OUT / f".child-{tag}.err"
    started = time.monotonic()
    psi0 = cpu_pressure_us()
    killed = False
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            env=env,
            cwd=cwd,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        status, usage = _wait4(proc.pid, started + timeout_s)
        if status is None:
            killed = True
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    psi1 = cpu_pressure_us()
    pressure = None
    if psi0 is not None and psi1 is not None and wall > 0:
        pressure = 100.0 * (psi1 - psi0) / (wall * 1e6)
    stdout = out_path.read_text(encoding="utf-8", errors="replace")
    stderr = err_path.read_text(encoding="utf-8", errors="replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return ChildResult(
        argv=list(argv),
        rc=proc.returncode,
        report=last_json(stdout),
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024.0,
        stdout=stdout,
        stderr=stderr,
        killed=killed,
        cpu_pressure_pct=pressure,
    )


def _wait4(pid: int, deadline: float) -> tuple[int | None, Any]:
    """Wait for `pid` until `deadline`; return (wait status, rusage) or (None, None)."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == pid:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.02)


def last_json(text: str) -> dict[str, Any]:
    """Return the last line of `text` that is a JSON object, or {}."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def client_argv(name: str) -> list[str]:
    """Return the command that runs contender `name` of `bench/clients.py`."""
    return [sys.executable, str(CLIENTS), name]


def run_client(name: str, job: dict[str, Any], timeout_s: float = 600.0) -> ChildResult:
    """Run contender `name` in its own process on `job` (given as JSON on its stdin)."""
    return run_child(client_argv(name), stdin=json.dumps(job), timeout_s=timeout_s)


# ---------------------------------------------------------------------------------------------
# Reporting


@dataclass
class Table:
    """A plain-text table, printed as Markdown so it can go into bench/README.md as it is."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row; numbers are shown as they come, so format them before."""
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        """Return the table as Markdown."""
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        return "\n".join([line(self.headers), sep, *(line(r) for r in self.rows)])


def fmt(value: float | None, digits: int = 2) -> str:
    """Return `value` rounded for a table, or "-" when there is none."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    """Return "met" or "MISSED" for a target."""
    return "met" if ok else "MISSED"


def save_report(name: str, data: dict[str, Any]) -> Path:
    """Write `data` as bench/out/NAME.json (the figures behind the printed tables)."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def header(title: str, argv: Sequence[str]) -> str:
    """Return the heading a benchmark prints: what, the exact command, and the machine."""
    cmd = "python " + shlex.join([os.path.relpath(argv[0], ROOT), *argv[1:]])
    return f"## {title}\n\ncommand: `{cmd}`\nmachine: {machine_note()}\n"
