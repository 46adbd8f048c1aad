"""`squall serve --engine vllm` on vLLM (CPU) with a real model and an adapter trained here."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
from engine_support import Trained, engine_python, start_serve

from squall.serve.client import ask, list_models
from squall.serve.preflight import check_port_free

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1200)]
KEY = "sk-engine-vllm-test-7777"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_vllm_serves_base_and_adapters_and_proves_them(trained: Trained, tmp_path: Path) -> None:
    py = engine_python("SQUALL_VLLM_PYTHON")
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    port = free_port()
    args = [
        "serve",
        "--model", str(trained.base),
        "--lora", f"arith={trained.arith}",
        "--lora", f"zero={trained.zero}",
        "--engine", "vllm",
        "--python", py,
        "--port", str(port),
        "--timeout", "500",
        "--engine-arg=--max-model-len", "--engine-arg=1024",
    ]  # fmt: skip
    served = start_serve(args, tmp_path / "endpoints.toml", tmp_path)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        models = {m.id: m.parent for m in list_models(url, api_key=KEY)}
        assert models == {"base": None, "arith": "base", "zero": "base"}
        block = tomllib.loads(served.endpoints)["endpoints"][0]
        assert block["base_url"] == url
        assert block["keys"] == ["${API_KEY}"]
        assert block["model"] == "arith"
        answer = ask(url, "arith", "37 + 48", api_key=KEY, max_tokens=8)
        assert answer.strip()
    finally:
        code, err = served.stop()
    print(f"\n[vllm] {trained.log}; ready+probe after {served.ready_s:.0f} s\n{err[-3000:]}")
    assert code == 0, err[-6000:]
    assert "adapter 'arith': applied:" in err
    # An adapter at its zero init changes nothing: the probe must say so, not pass it.
    assert "adapter 'zero': NOT shown applied" in err
    assert KEY not in err
    check_port_free("127.0.0.1", port)
