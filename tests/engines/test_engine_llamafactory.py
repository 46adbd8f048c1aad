"""`squall serve` on LLaMA-Factory (huggingface backend) from a seed-style YAML, on CPU."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from engine_support import Trained, engine_python, start_serve

from squall.errors import ServeError
from squall.serve.client import ask, list_models
from squall.serve.preflight import check_port_free

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1200)]
KEY = "sk-engine-lf-test-8888"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_llamafactory_serves_the_seed_yaml_and_says_what_it_cannot_prove(
    trained: Trained, tmp_path: Path
) -> None:
    py = engine_python("SQUALL_LLAMAFACTORY_PYTHON")
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    # The seed's YAML shape, pointed at the small model; huggingface backend for CPU.
    (tmp_path / "vllm_api.yaml").write_text(
        f"model_name_or_path: {trained.base}\n"
        f"adapter_name_or_path: {trained.arith}/\n"
        "template: smollm2\n"
        "finetuning_type: lora\n"
        "infer_backend: huggingface\n"
    )
    port = free_port()
    args = ["serve", "vllm_api.yaml", "--python", py, "--port", str(port), "--timeout", "300"]
    served = start_serve(args, tmp_path / "endpoints.toml", tmp_path)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        assert [m.id for m in list_models(url, api_key=KEY)] == ["arith"]
        assert "max_concurrency = 4" in served.endpoints
        assert ask(url, "arith", "37 + 48", api_key=KEY, max_tokens=8).strip()
        with pytest.raises(ServeError, match="401"):
            list_models(url, api_key="sk-not-the-key-0000")
    finally:
        code, err = served.stop()
    print(
        f"\n[llamafactory] {trained.log}; ready+probe after {served.ready_s:.0f} s\n{err[-3000:]}"
    )
    assert code == 0, err[-6000:]
    assert "adapter check: not judged" in err
    assert "answered model 'squall-probe-no-such-model'" in err
    assert KEY not in err
    check_port_free("127.0.0.1", port)
