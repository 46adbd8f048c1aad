"""`squall serve` end to end, as a real process driving a fake engine through `--python`.

The fake Python is a shell script: it answers serve's "can you import vllm?" check with
yes and runs `tests/engines/fake_engine.py` for everything else, so serve builds and runs
its real vLLM command line.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squall.config import load
from squall.serve.preflight import check_port_free

FAKE = Path(__file__).parent / "engines" / "fake_engine.py"
SRC = Path(__file__).resolve().parent.parent / "src"
KEY = "sk-cli-test-44445555"
# Only serve's own commands: these tests must not depend on the other sub-commands' modules.
ENTRY = (
    "import typer; from squall.cli.serve import register; app = typer.Typer(); register(app); app()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with .env, a base model folder, two adapters on it, and a fake engine Python."""
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    base = tmp_path / "SmolLM2"
    base.mkdir()
    (base / "config.json").write_text("{}")
    for name in ("arith", "dud"):
        d = tmp_path / name
        d.mkdir()
        cfg = {"base_model_name_or_path": "/elsewhere/SmolLM2", "r": 8}
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        (d / "adapter_model.safetensors").write_bytes(b"x")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    py = bin_dir / "python"
    py.write_text(
        f'#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\nexec "{sys.executable}" "{FAKE}" "$@"\n'
    )
    py.chmod(0o755)
    return tmp_path


def serve_args(work: Path, port: int, *extra: str) -> list[str]:
    return [
        "serve",
        "--model",
        str(work / "SmolLM2"),
        "--lora",
        f"arith={work / 'arith'}",
        "--lora",
        f"dud={work / 'dud'}",
        "--engine",
        "vllm",
        "--python",
        str(work / "venv" / "bin" / "python"),
        "--port",
        str(port),
        "--engine-arg=--fake-same",
        "--engine-arg=dud",
        *extra,
    ]


def env_for(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "API_PORT")}
    env["PYTHONPATH"] = str(SRC)
    return env


def squall(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args],
        cwd=work,
        env=env_for(work),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_check_proves_adapters_and_prints_endpoints(work: Path) -> None:
    port = free_port()
    out = work / "endpoints.toml"
    done = squall(
        work,
        *serve_args(work, port, "--check", "--write-endpoints", str(out)),
        "--engine-arg=--max-num-seqs=48",
    )
    assert done.returncode == 0, done.stderr
    assert "[[endpoints]]" in done.stdout
    (ep,) = load(out, env={"API_KEY": KEY}).endpoints
    assert (ep.rpm, ep.max_concurrency) == (math.inf, 48)
    assert f'base_url = "http://127.0.0.1:{port}/v1"' in done.stdout
    assert 'keys = ["${API_KEY}"]' in done.stdout
    assert 'model = "arith"' in done.stdout
    assert out.read_text() == done.stdout
    assert "ready after" in done.stderr
    assert "SmolLM2, arith (on SmolLM2), dud (on SmolLM2)" in done.stderr
    assert "adapter 'arith': applied: 8/8" in done.stderr
    assert "adapter 'dud': NOT shown applied" in done.stderr
    assert "VLLM_API_KEY=sk-...5555" in done.stderr
    assert KEY not in done.stdout + done.stderr
    assert (work / ".squall" / "serve" / f"vllm-{port}.log").is_file()
    check_port_free("127.0.0.1", port)  # the engine is gone


def test_require_applied_fails_on_an_adapter_that_changes_nothing(work: Path) -> None:
    done = squall(work, *serve_args(work, free_port(), "--check", "--require-applied"))
    assert done.returncode == 1
    assert "--require-applied" in done.stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_signal_stops_the_whole_engine_tree(work: Path, sig: signal.Signals, code: int) -> None:
    port = free_port()
    out = work / "endpoints.toml"
    pidfile = work / "child.pid"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ENTRY,
            *serve_args(work, port, "--write-endpoints", str(out), "--no-probe"),
            "--engine-arg=--fake-child-pidfile",
            f"--engine-arg={pidfile}",
        ],
        cwd=work,
        env=env_for(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out.exists(), proc.communicate(timeout=30)[1]
        child = int(pidfile.read_text())
        os.kill(child, 0)  # the engine's worker is up
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)  # also closes the pipes
    assert proc.returncode == code, err
    assert "stopping the engine" in err
    stat = Path(f"/proc/{child}/stat")
    deadline = time.monotonic() + 10
    while stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the engine's child outlived squall serve"
        time.sleep(0.05)
    check_port_free("127.0.0.1", port)


def test_port_in_use_fails_before_starting(work: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = squall(work, *serve_args(work, port, "--check"))
    assert done.returncode == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in done.stderr
    assert not (work / ".squall").exists()  # nothing started, no log


def test_missing_model_and_missing_key_are_usage_errors(work: Path) -> None:
    done = squall(work, "serve", "--model", "./nope", "--engine", "vllm", "--check")
    assert done.returncode == 2
    assert "--model ./nope: no such folder" in done.stderr
    (work / ".env").unlink()
    done = squall(work, *serve_args(work, free_port(), "--check"))
    assert done.returncode == 2
    assert "API_KEY is not set" in done.stderr and "--no-key" in done.stderr


def test_base_mismatch_is_refused(work: Path) -> None:
    cfg = {"base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct", "r": 8}
    (work / "dud" / "adapter_config.json").write_text(json.dumps(cfg))
    done = squall(work, *serve_args(work, free_port(), "--dry-run"))
    assert done.returncode == 2
    assert "adapter 'dud'" in done.stderr and "trained on 'Qwen/Qwen2.5-7B-Instruct'" in done.stderr


def test_seed_style_yaml_dry_run_for_llamafactory(work: Path) -> None:
    (work / "venv" / "bin" / "llamafactory-cli").write_text("#!/bin/sh\n")
    (work / "vllm_api.yaml").write_text(
        "model_name_or_path: ./SmolLM2\n"
        "adapter_name_or_path: ./arith/\n"
        "template: smollm2\n"
        "finetuning_type: lora\n"
        "infer_backend: huggingface\n"
    )
    env = env_for(work)
    env["API_PORT"] = "8765"
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, "serve", "vllm_api.yaml", "--python", "venv/bin/python",
         "--dry-run"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "would start: API_HOST=127.0.0.1 API_KEY=sk-...5555 API_MODEL_NAME=arith" in done.stderr
    assert "API_PORT=8765" in done.stderr and "MAX_CONCURRENT=4" in done.stderr
    assert "llamafactory-cli api .squall/serve/llamafactory-8765.yaml" in done.stderr
    assert "answers any model name" in done.stderr
    assert "template: smollm2" in done.stderr
    assert KEY not in done.stderr
