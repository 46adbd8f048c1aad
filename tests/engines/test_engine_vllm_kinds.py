"""`squall run --api completions` and `--api embeddings` against a real vLLM on CPU.

vLLM serves the engine tests' small base model (SmolLM2-135M, converted here) with no
adapters: plain `/v1/completions` (no chat template) on the generate runner, and
`/v1/embeddings` on the pooling runner (`--runner pooling --convert embed`).
Each test starts its own vLLM directly (about a minute on CPU) and stops it after.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_support import engine_python, free_port, squall_command, squall_env
from model_cache import Trained

from squall.serve.vllm import CPU_MEMORY_SHARE

pytestmark = [pytest.mark.engine, pytest.mark.timeout(600)]
KEY = "sk-engine-vllm-kinds-4242"
PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "Water is made of"]


def _start_vllm(py: str, base: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [
        py, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(base), "--served-model-name", "base",
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "512",
        # As `squall serve` does on a CPU build: vLLM's default share (0.92) of the machine's
        # memory is refused at start whenever that much is not free, as on a busy CI runner.
        "--gpu-memory-utilization", str(CPU_MEMORY_SHARE), *extra,
    ]  # fmt: skip
    env = {**os.environ, "VLLM_API_KEY": KEY}
    with log.open("w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, text=True)
    started = time.monotonic()
    while time.monotonic() - started < 400:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited {proc.returncode}:\n{_why(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    pytest.fail(f"vLLM did not become ready:\n{_why(log)}")


def _why(log: Path) -> str:
    """Return the log's error lines, then its tail: the root cause sits above the last trace."""
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    errors = [ln for ln in lines if "Error" in ln and not ln.lstrip().startswith("File")]
    return "error lines:\n" + "\n".join(errors[-20:]) + "\n--- tail:\n" + text[-4000:]


@pytest.fixture
def vllm_server(trained: Trained, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Yield the /v1 URL of a vLLM serving the base model with the runner flags given."""
    py = engine_python("SQUALL_VLLM_PYTHON")
    port = free_port()
    proc = _start_vllm(py, trained.base, port, tmp_path / "vllm.log", *request.param)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _squall_run(
    tmp_path: Path, url: str, api: str, *extra: str
) -> tuple[list[dict[str, Any]], Any]:
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(PROMPTS))
    )
    out = tmp_path / "out.jsonl"
    args = [
        "run", str(inp), "-o", str(out), "--base-url", url, "--model", "base",
        "--key-env", "API_KEY", "--api", api, "--progress", "off", *extra,
    ]  # fmt: skip
    env = squall_env()
    done = subprocess.run(
        squall_command(*args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line]
    st = subprocess.run(
        squall_command("status", str(tmp_path / "out.jsonl.squall.sqlite"), "--json"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert st.returncode == 0, st.stdout + st.stderr[-4000:]
    account = json.loads(st.stdout)
    assert KEY not in done.stdout + done.stderr + st.stdout + st.stderr
    return rows, account


@pytest.mark.parametrize("vllm_server", [()], indirect=True)
def test_vllm_completions_plain_prompts(vllm_server: str, tmp_path: Path) -> None:
    rows, account = _squall_run(tmp_path, vllm_server, "completions", "--max-tokens", "12")
    assert [r["id"] for r in rows] == list(range(len(PROMPTS)))
    for r in rows:
        assert r["error"] is None, r
        assert isinstance(r["response"], str) and r["response"].strip(), r
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0, r
    n = len(PROMPTS)
    assert (account["total"], account["done"], account["failed"], account["pending"]) == (
        n,
        n,
        0,
        0,
    )
    assert account["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    assert account["completion_tokens"] == sum(r["completion_tokens"] for r in rows)


@pytest.mark.parametrize(
    "vllm_server", [("--runner", "pooling", "--convert", "embed")], indirect=True
)
def test_vllm_embeddings_on_the_pooling_runner(
    vllm_server: str, trained: Trained, tmp_path: Path
) -> None:
    hidden = json.loads((trained.base / "config.json").read_text())["hidden_size"]
    rows, account = _squall_run(tmp_path, vllm_server, "embeddings")
    assert [r["id"] for r in rows] == list(range(len(PROMPTS)))
    for r in rows:
        assert r["error"] is None, r
        vec = r["embedding"]
        assert isinstance(vec, list) and len(vec) == hidden, r
        assert all(isinstance(x, float) for x in vec) and any(x != 0 for x in vec)
    # Distinct prompts get distinct vectors: each row's vector is its own, not a neighbour's.
    assert len({tuple(r["embedding"]) for r in rows}) == len(PROMPTS)
    n = len(PROMPTS)
    assert (account["total"], account["done"], account["failed"], account["pending"]) == (
        n,
        n,
        0,
        0,
    )
    assert account["prompt_tokens"] > 0
