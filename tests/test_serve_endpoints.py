"""The [[endpoints]] block serve prints is one squall's own config loader accepts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from squall.config import load
from squall.errors import OutputError
from squall.serve.endpoints import endpoints_block, write_endpoints

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
    assert "sk-real-key-9876" not in path.read_text()


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
