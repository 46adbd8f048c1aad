"""Mistakes caught before any engine starts: ports, paths, adapters made for another base."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.errors import ConfigError, ServeError
from squall.serve.preflight import check_port_free, preflight
from squall.serve.spec import Adapter, ServeSpec


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def make_base(tmp_path: Path, name: str = "SmolLM2-135M") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def make_adapter(tmp_path: Path, name: str, base: str) -> Adapter:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    (d / "adapter_model.safetensors").write_bytes(b"x")
    return Adapter(name, d)


def test_port_in_use_is_refused(listener: int) -> None:
    with pytest.raises(ServeError, match=f"port {listener} on 127.0.0.1 is already in use.*--port"):
        check_port_free("127.0.0.1", listener)


def test_free_port_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_port_free("127.0.0.1", port)


def test_missing_model_path(tmp_path: Path) -> None:
    spec = ServeSpec(engine="vllm", model=str(tmp_path / "nope"), port=1)
    with pytest.raises(ConfigError, match=r"--model .*nope: no such folder"):
        preflight(spec, check_port=False)


def test_model_folder_without_config(tmp_path: Path) -> None:
    spec = ServeSpec(engine="vllm", model=str(tmp_path))
    with pytest.raises(ConfigError, match=r"no config.json"):
        preflight(spec, check_port=False)


def test_hub_id_is_a_warning_not_an_error() -> None:
    spec = ServeSpec(engine="llamafactory", model="qwen/Qwen2.5-7B-Instruct")
    warnings = preflight(spec, check_port=False)
    assert any("download it from the model hub" in w for w in warnings)


def test_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    base = make_base(tmp_path)
    a = make_adapter(tmp_path, "ner", "Qwen/Qwen2.5-7B-Instruct")
    spec = ServeSpec(engine="vllm", model=str(base), adapters=(a,))
    with pytest.raises(
        ConfigError, match=r"trained on 'Qwen/Qwen2.5-7B-Instruct'.*--no-base-check"
    ):
        preflight(spec, check_port=False)
    assert preflight(spec, check_port=False, check_base=False) == []


def test_adapter_base_matches_by_last_path_part(tmp_path: Path) -> None:
    base = make_base(tmp_path, "Qwen2.5-7B-Instruct")
    a = make_adapter(tmp_path, "ner", "Qwen/Qwen2.5-7B-Instruct/")
    assert (
        preflight(ServeSpec(engine="vllm", model=str(base), adapters=(a,)), check_port=False) == []
    )


def test_missing_adapter_folder_and_files(tmp_path: Path) -> None:
    base = make_base(tmp_path)
    spec = ServeSpec(engine="vllm", model=str(base), adapters=(Adapter("x", tmp_path / "none"),))
    with pytest.raises(ConfigError, match=r"adapter 'x'.*no such folder"):
        preflight(spec, check_port=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = ServeSpec(engine="vllm", model=str(base), adapters=(Adapter("e", empty),))
    with pytest.raises(ConfigError, match=r"no adapter_config.json"):
        preflight(spec, check_port=False)


def test_duplicate_and_clashing_names(tmp_path: Path) -> None:
    base = make_base(tmp_path)
    a = make_adapter(tmp_path, "a", str(base))
    with pytest.raises(ConfigError, match="must differ"):
        preflight(ServeSpec(engine="vllm", model=str(base), adapters=(a, a)), check_port=False)
    clash = Adapter("SmolLM2-135M", a.path)
    with pytest.raises(ConfigError, match="also the base's name"):
        preflight(ServeSpec(engine="vllm", model=str(base), adapters=(clash,)), check_port=False)


def test_llamacpp_wants_gguf_files(tmp_path: Path) -> None:
    base = make_base(tmp_path)
    with pytest.raises(ConfigError, match=r"llama.cpp needs a \.gguf file"):
        preflight(ServeSpec(engine="llamacpp", model=str(base)), check_port=False)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    a = make_adapter(tmp_path, "peftdir", str(base))
    with pytest.raises(ConfigError, match="convert_lora_to_gguf"):
        preflight(ServeSpec(engine="llamacpp", model=str(gguf), adapters=(a,)), check_port=False)
