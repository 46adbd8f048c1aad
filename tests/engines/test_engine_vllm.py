"""`squall serve` on vLLM (CPU) from the seed's YAML, then `squall eval arithmetic` against it.

A real model (SmolLM2-135M) with two adapters trained here: `arith` (trained) and `zero`
(untrained, so it changes nothing: the probe must say so rather than pass it).
"""

from __future__ import annotations

import sys
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

from squall.serve.client import ask, list_models
from squall.serve.preflight import check_port_free

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = [pytest.mark.engine, pytest.mark.timeout(1200)]
KEY = "sk-engine-vllm-test-7777"


def test_vllm_serves_the_seed_yaml_proves_adapters_and_evaluates_them(
    trained: Trained, tmp_path: Path
) -> None:
    py = engine_python("SQUALL_VLLM_PYTHON")
    (tmp_path / ".env").write_text(f"API_KEY={KEY}\n")
    # Adapters as a user keeps them, in folders named after what they are (saves/arith).
    for name, target in (("arith", trained.arith), ("zero", trained.zero)):
        (tmp_path / name).symlink_to(target, target_is_directory=True)
    # The seed's YAML, unchanged but for paths and template; --engine vllm runs vLLM itself.
    (tmp_path / "vllm_api.yaml").write_text(
        SEED_YAML.format(base=trained.base, adapters=f"{tmp_path}/arith/, {tmp_path}/zero/")
    )
    port = free_port()
    args = [
        "serve", "vllm_api.yaml",
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
        assert ask(url, "arith", "37 + 48", api_key=KEY, max_tokens=8).strip()

        # The block serve wrote is the config eval takes; the key comes from .env.
        ev = run_eval(tmp_path, tmp_path / "endpoints.toml", ["base", "arith"], tmp_path / "ev")
        assert ev.code == 0, ev.stdout + ev.stderr[-4000:]
        scored = check_eval_outputs(tmp_path / "ev", ["base", "arith"])
        # Each model's rows went to that model: the adapter's answers are not the base's.
        pairs = zip(scored["base"]["rows"], scored["arith"]["rows"], strict=True)
        assert sum(b["response"] != a["response"] for b, a in pairs) > 0
        for path in (tmp_path / "ev").iterdir():
            assert KEY.encode() not in path.read_bytes(), path
        assert KEY not in ev.stdout + ev.stderr
    finally:
        code, err = served.stop()
    print(f"\n[vllm] {trained.log}; ready+probe after {served.ready_s:.0f} s\n{err[-3000:]}")
    print(accuracy_line("vllm", scored, ev.wall_s))
    assert code == 0, err[-6000:]
    assert "--enforce-eager" in err  # the YAML's vllm_enforce_eager reached vLLM
    assert "adapter 'arith': applied:" in err
    # An adapter at its zero init changes nothing: the probe must say so, not pass it.
    assert "adapter 'zero': NOT shown applied" in err
    assert KEY not in err
    check_port_free("127.0.0.1", port)
