"""The engine process tree: readiness on /v1/models, the log's tail on failure, killing it all.

Each test starts `tests/engines/fake_engine.py` as a real process on a real port.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from squall.errors import ServeError
from squall.serve.process import EngineProcess, explain, tail

FAKE = Path(__file__).parent / "engines" / "fake_engine.py"
KEY = "sk-proc-test-0000001111"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake(tmp_path: Path, port: int, *flags: str) -> EngineProcess:
    argv = [sys.executable, str(FAKE), "--port", str(port), "--served-model-name", "base", *flags]
    return EngineProcess(argv, log_path=tmp_path / "engine.log", env={"VLLM_API_KEY": KEY})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_ready_once_models_lists_every_adapter(tmp_path: Path) -> None:
    port = free_port()
    with fake(
        tmp_path, port, "--lora-modules", "arith=/x", "ner=/y", "--fake-delay", "0.7"
    ) as proc:
        waits: list[float] = []
        models = proc.wait_ready(
            f"http://127.0.0.1:{port}/v1",
            ["base", "arith", "ner"],
            api_key=KEY,
            timeout_s=30,
            poll_s=0.1,
            on_wait=lambda elapsed, missing: waits.append(elapsed),
        )
        assert [(m.id, m.parent) for m in models] == [
            ("base", None),
            ("arith", "base"),
            ("ner", "base"),
        ]
        assert waits  # it really waited through the delay
    assert "listening on" in (tmp_path / "engine.log").read_text()


def test_timeout_names_missing_models_and_shows_log_tail(tmp_path: Path) -> None:
    port = free_port()
    with (
        fake(tmp_path, port, "--lora-modules", "arith=/x") as proc,
        pytest.raises(ServeError) as info,
    ):
        proc.wait_ready(
            f"http://127.0.0.1:{port}/v1",
            ["base", "arith", "missing"],
            api_key=KEY,
            timeout_s=1.0,
            poll_s=0.1,
        )
    msg = str(info.value)
    assert "not ready after 1 s" in msg
    assert "'missing'" in msg
    assert "fake-engine: starting" in msg  # the log's tail
    assert KEY not in msg


def test_wrong_key_is_reported_as_such(tmp_path: Path) -> None:
    port = free_port()
    with (
        fake(tmp_path, port) as proc,
        pytest.raises(ServeError, match=r"(?s)HTTP 401: Unauthorized.*API_KEY"),
    ):
        proc.wait_ready(
            f"http://127.0.0.1:{port}/v1", ["base"], api_key="sk-wrong", timeout_s=1.0, poll_s=0.1
        )


def test_engine_dying_early_shows_its_last_words(tmp_path: Path) -> None:
    port = free_port()
    with (
        fake(tmp_path, port, "--fake-crash") as proc,
        pytest.raises(ServeError, match=r"(?s)exited with code 1.*boom: cannot load the model"),
    ):
        proc.wait_ready(f"http://127.0.0.1:{port}/v1", ["base"], api_key=KEY, timeout_s=30)


def test_stop_kills_the_whole_tree(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "child.pid"
    proc = fake(tmp_path, port, "--fake-child-pidfile", str(pidfile))
    proc.start()
    try:
        proc.wait_ready(
            f"http://127.0.0.1:{port}/v1", ["base"], api_key=KEY, timeout_s=30, poll_s=0.1
        )
        child = int(pidfile.read_text())
        assert alive(child)
    finally:
        code = proc.stop(grace_s=5)
    assert code == -signal.SIGTERM
    assert wait_gone(child)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    port = free_port()
    proc = fake(tmp_path, port, "--fake-ignore-term")
    proc.start()
    proc.wait_ready(f"http://127.0.0.1:{port}/v1", ["base"], api_key=KEY, timeout_s=30, poll_s=0.1)
    assert proc.stop(grace_s=0.5) == -signal.SIGKILL


def test_missing_program_is_a_serve_error(tmp_path: Path) -> None:
    proc = EngineProcess([str(tmp_path / "no-engine")], log_path=tmp_path / "e.log")
    with pytest.raises(ServeError, match="cannot start"):
        proc.start()
    assert proc.stop() is None


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(p, 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "none") == ""


def test_log_explanation_leads_with_the_root_cause(tmp_path: Path) -> None:
    p = tmp_path / "log"
    lines = ["(Worker pid=1) ERROR x.py:9] ValueError: Available memory is less than desired"]
    lines += [f"  frame {i}" for i in range(60)] + [
        "RuntimeError: Engine core initialization failed."
    ]
    p.write_text("\n".join(lines) + "\n")
    text = explain(p, 5)
    assert text.startswith(lines[0])
    assert text.endswith("RuntimeError: Engine core initialization failed.")
    assert text.count("RuntimeError") == 1
