"""`squall serve` on LLaMA-Factory (huggingface backend) from the seed's YAML, then `squall eval`.

LLaMA-Factory merges the adapter at load and answers any model name with the merged model,
so the base cannot be asked beside it: the adapter is evaluated on the adapter's server, and
the base on a second server that serves it alone (what the probe's message tells users to do).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import (
    SEED_YAML,
    accuracy_line,
    check_eval_outputs,
    engine_python,
    free_port,
    run_eval,
    start_serve,
)
from model_cache import Trained

from squall.errors import ServeError
from squall.serve.client import ask, list_models
from squall.serve.preflight import check_port_free

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1200)]
KEY = "sk-engine-lf-test-8888"


def test_llamafactory_serves_the_seed_yaml_and_evaluates_adapter_and_base(
    trained: Trained, tmp_path: Path
) -> None:
    py = engine_python("SQUALL_LLAMAFACTORY_PYTHON")
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    (tmp_path / "arith").symlink_to(trained.arith, target_is_directory=True)
    # The seed's YAML, unchanged but for paths and template. Its `infer_backend: vllm` needs
    # vllm 0.11 or older inside LLaMA-Factory's venv, which has no CPU build: the flag picks
    # the huggingface backend instead, leaving the file as the seed wrote it.
    (tmp_path / "vllm_api.yaml").write_text(
        SEED_YAML.format(base=trained.base, adapters=f"{tmp_path}/arith/")
    )
    port = free_port()
    args = [
        "serve", "vllm_api.yaml", "--infer-backend", "huggingface",
        "--python", py, "--port", str(port), "--timeout", "300",
    ]  # fmt: skip
    served = start_serve(args, tmp_path / "endpoints.toml", tmp_path)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        assert [m.id for m in list_models(url, api_key=KEY)] == ["arith"]
        assert "max_concurrency = 4" in served.endpoints
        assert ask(url, "arith", "37 + 48", api_key=KEY, max_tokens=8).strip()
        with pytest.raises(ServeError, match="401"):
            list_models(url, api_key="sk-not-the-key-0000")
        adapter = run_eval(tmp_path, tmp_path / "endpoints.toml", ["arith"], tmp_path / "ev-arith")
        assert adapter.code == 0, adapter.stdout + adapter.stderr[-4000:]
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
    with_adapter = check_eval_outputs(tmp_path / "ev-arith", ["arith"])
    print(accuracy_line("llamafactory, adapter merged", with_adapter, adapter.wall_s))

    # The base alone, on a server of its own, evaluated on the same expressions.
    port = free_port()
    args = [
        "serve", "--model", str(trained.base), "--engine", "llamafactory",
        "--template", "smollm2", "--python", py, "--port", str(port), "--timeout", "300",
    ]  # fmt: skip
    served = start_serve(args, tmp_path / "endpoints-base.toml", tmp_path)
    try:
        assert [m.id for m in list_models(f"http://127.0.0.1:{port}/v1", api_key=KEY)] == ["base"]
        base = run_eval(tmp_path, tmp_path / "endpoints-base.toml", ["base"], tmp_path / "ev-base")
        assert base.code == 0, base.stdout + base.stderr[-4000:]
    finally:
        code, err = served.stop()
    assert code == 0, err[-6000:]
    assert "no adapter to check" in err
    without = check_eval_outputs(tmp_path / "ev-base", ["base"])
    print(accuracy_line("llamafactory, base alone", without, base.wall_s))
    pairs = zip(without["base"]["rows"], with_adapter["arith"]["rows"], strict=True)
    assert sum(b["response"] != a["response"] for b, a in pairs) > 0
    check_port_free("127.0.0.1", port)
