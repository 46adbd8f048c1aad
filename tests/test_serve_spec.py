"""Reading what to serve: the seed's LLaMA-Factory YAML, --lora values and engine names."""

from __future__ import annotations

from pathlib import Path

import pytest

from squall.errors import ConfigError
from squall.serve.spec import ServeSpec, load_yaml_spec, parse_engine, parse_lora

# The seed's vllm_api.yaml, byte for byte (comments included).
SEED_YAML = """\
model_name_or_path: qwen/Qwen2.5-7B-Instruct
adapter_name_or_path: ../saves/qwen2.5-7B/ner_epoch5/
template: qwen
finetuning_type: lora
infer_backend: vllm
vllm_enforce_eager: true

# llamafactory-cli chat lora_vllm.yaml
# llamafactory-cli webchat lora_vllm.yaml
# API_PORT=8000 llamafactory-cli api lora_vllm.yaml
"""


def write(tmp_path: Path, text: str, name: str = "vllm_api.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_seed_yaml_reads_unchanged(tmp_path: Path) -> None:
    spec = load_yaml_spec(write(tmp_path, SEED_YAML))
    assert spec.engine == "llamafactory"
    assert spec.model == "qwen/Qwen2.5-7B-Instruct"
    assert [(a.name, a.path) for a in spec.adapters] == [
        ("ner_epoch5", Path("../saves/qwen2.5-7B/ner_epoch5/"))
    ]
    assert spec.template == "qwen"
    assert spec.infer_backend == "vllm"
    assert spec.options["vllm_enforce_eager"] is True
    assert "model_name_or_path" not in spec.options
    assert spec.base_name == "Qwen2.5-7B-Instruct"
    assert spec.base_url == "http://127.0.0.1:8000/v1"


def test_comma_separated_adapters_each_get_a_name(tmp_path: Path) -> None:
    text = "model_name_or_path: ./base\nadapter_name_or_path: a/ner, b/arith\ntemplate: qwen\n"
    spec = load_yaml_spec(write(tmp_path, text))
    assert [a.name for a in spec.adapters] == ["ner", "arith"]


def test_missing_model_names_file_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, "template: qwen\nadapter_name_or_path: x\n")
    with pytest.raises(ConfigError, match=r"vllm_api\.yaml, field 'model_name_or_path'.*missing"):
        load_yaml_spec(p)


def test_bad_adapter_value_names_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, "model_name_or_path: ./m\nadapter_name_or_path: 3\n")
    with pytest.raises(ConfigError, match=r"line 2, field 'adapter_name_or_path'"):
        load_yaml_spec(p)


def test_full_finetuning_with_adapter_is_refused(tmp_path: Path) -> None:
    p = write(
        tmp_path, "model_name_or_path: ./m\nadapter_name_or_path: ./a\nfinetuning_type: full\n"
    )
    with pytest.raises(ConfigError, match=r"line 3.*finetuning_type: lora"):
        load_yaml_spec(p)


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    p = write(tmp_path, "model_name_or_path: ./m\ntemplate: [qwen\n")
    with pytest.raises(ConfigError, match=r"vllm_api\.yaml, line \d+: not valid YAML"):
        load_yaml_spec(p)


def test_unreadable_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "name", "path"),
    [
        ("arith=./saves/arith", "arith", "saves/arith"),
        ("./saves/ner_epoch5/", "ner_epoch5", "saves/ner_epoch5"),
        ("/abs/dir=weird/adapter", "adapter", "/abs/dir=weird/adapter"),
        ("x.v2=lora.gguf", "x.v2", "lora.gguf"),
    ],
)
def test_parse_lora(text: str, name: str, path: str) -> None:
    a = parse_lora(text)
    assert a.name == name
    assert a.path == Path(path)


def test_parse_lora_rejects_bad_names() -> None:
    with pytest.raises(ConfigError, match="model name"):
        parse_lora("bad name=./x")
    with pytest.raises(ConfigError, match="no path"):
        parse_lora("arith=")


def test_parse_engine_accepts_spellings() -> None:
    assert parse_engine("vLLM") == "vllm"
    assert parse_engine("llama-factory") == "llamafactory"
    assert parse_engine("llama_cpp") == "llamacpp"
    with pytest.raises(ConfigError, match="choose one of vllm, llamafactory, llamacpp"):
        parse_engine("tgi")


def test_base_name_and_url() -> None:
    spec = ServeSpec(engine="llamacpp", model="/m/SmolLM2.Q4.gguf", host="0.0.0.0", port=9000)
    assert spec.base_name == "SmolLM2.Q4"
    assert spec.base_url == "http://127.0.0.1:9000/v1"
    assert ServeSpec(engine="vllm", model="./base/", name="b").base_name == "b"
    assert ServeSpec(engine="vllm", model="::1", host="::1").base_url == "http://[::1]:8000/v1"
