"""The command lines, environments and files squall builds for each engine."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
import yaml

from squall.errors import ConfigError, ServeError
from squall.serve import vllm
from squall.serve.engines import plan_launch
from squall.serve.launch import Program, locate_program
from squall.serve.spec import Adapter, ServeSpec

KEY = "sk-test-1234567890abcd"


def adapter(tmp_path: Path, name: str, r: int = 8) -> Adapter:
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"r": r, "base_model_name_or_path": "b"}))
    return Adapter(name, d)


def test_vllm_cpu_runs_the_module_with_the_same_flags(tmp_path: Path) -> None:
    spec = ServeSpec(
        engine="vllm",
        model="/m/base",
        adapters=(adapter(tmp_path, "arith"), adapter(tmp_path, "ner", r=16)),
        port=8123,
        options={"vllm_enforce_eager": True, "vllm_maxlen": 2048},
    )
    launch = plan_launch(
        spec, python=None, api_key=KEY, workdir=tmp_path, program=Program("/venv/bin/python", None)
    )
    argv = list(launch.argv)
    assert argv[:5] == [
        "/venv/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/m/base",
    ]
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--served-model-name") + 1] == "base"
    assert "--enforce-eager" in argv
    assert argv[argv.index("--max-model-len") + 1] == "2048"
    assert argv[argv.index("--max-loras") + 1] == "2"
    assert argv[argv.index("--max-lora-rank") + 1] == "16"
    i = argv.index("--lora-modules")
    assert argv[i + 1 : i + 3] == [f"arith={tmp_path / 'arith'}", f"ner={tmp_path / 'ner'}"]
    assert launch.model_names == ("base", "arith", "ner")
    assert launch.base_name == "base"
    assert not launch.answers_any_name


def test_vllm_key_travels_in_env_never_argv(tmp_path: Path) -> None:
    spec = ServeSpec(engine="vllm", model="/m/base")
    launch = plan_launch(
        spec, python=None, api_key=KEY, workdir=tmp_path, program=Program(None, "/bin/vllm")
    )
    assert launch.argv[:3] == ("/bin/vllm", "serve", "/m/base")
    assert launch.env["VLLM_API_KEY"] == KEY
    assert KEY not in " ".join(launch.argv)
    shown = launch.display()
    assert KEY not in shown
    assert "VLLM_API_KEY=sk-...abcd" in shown


def test_vllm_lora_rank_rounds_up_to_an_allowed_value(tmp_path: Path) -> None:
    spec = ServeSpec(engine="vllm", model="/m/b", adapters=(adapter(tmp_path, "a", r=20),))
    launch = plan_launch(
        spec, python=None, api_key=None, workdir=tmp_path, program=Program("py", None)
    )
    assert launch.argv[launch.argv.index("--max-lora-rank") + 1] == "32"
    assert any("no API key" in n for n in launch.notes)


def test_llamafactory_env_yaml_and_traps(tmp_path: Path) -> None:
    spec = ServeSpec(
        engine="llamafactory",
        model="/m/base",
        adapters=(adapter(tmp_path, "arith"),),
        template="smollm2",
        port=8011,
        options={"template": "ignored-here", "cutoff_len": 512},
    )
    launch = plan_launch(
        spec,
        python=None,
        api_key=KEY,
        workdir=tmp_path,
        program=Program(None, "/v/llamafactory-cli"),
    )
    config = tmp_path / "llamafactory-8011.yaml"
    assert launch.argv == ("/v/llamafactory-cli", "api", str(config))
    assert launch.env["API_PORT"] == "8011"
    assert launch.env["API_HOST"] == "127.0.0.1"
    assert launch.env["API_KEY"] == KEY
    assert launch.env["API_MODEL_NAME"] == "arith"
    assert launch.env["MAX_CONCURRENT"] == "4"
    assert launch.max_concurrency == 4
    written = yaml.safe_load(launch.files[config])
    assert written == {
        "model_name_or_path": "/m/base",
        "adapter_name_or_path": str(tmp_path / "arith"),
        "finetuning_type": "lora",
        "template": "smollm2",
        "cutoff_len": 512,
        "infer_backend": "huggingface",
    }
    assert launch.base_name is None  # merged: the bare base cannot be asked beside it
    assert launch.model_names == ("arith",)
    assert launch.answers_any_name
    assert any("one request at a time" in n for n in launch.notes)
    assert KEY not in launch.display()


def test_llamafactory_without_pyyaml_writes_its_config_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ServeSpec(
        engine="llamafactory",
        model="/m/base",
        adapters=(adapter(tmp_path, "arith"),),
        template="qwen",
        options={"cutoff_len": 512},
    )
    program = Program(None, "/v/llamafactory-cli")
    with_yaml = plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=program)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "yaml", None)  # a plain `pip install squall`: no PyYAML
        bare = plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=program)
    ((path, text),) = bare.files.items()
    assert json.loads(text) == yaml.safe_load(text) == yaml.safe_load(with_yaml.files[path])


def test_llamafactory_without_script_runs_its_main(tmp_path: Path) -> None:
    spec = ServeSpec(engine="llamafactory", model="/m/b", template="qwen", max_concurrent=9)
    launch = plan_launch(
        spec, python=None, api_key=None, workdir=tmp_path, program=Program("py", None)
    )
    assert launch.argv[:4] == ("py", "-c", "from llamafactory.cli import main; main()", "api")
    assert launch.env["MAX_CONCURRENT"] == "9"
    assert launch.base_name == "b"
    assert launch.adapter_names == ()


def test_llamafactory_needs_a_template(tmp_path: Path) -> None:
    spec = ServeSpec(engine="llamafactory", model="/m/b")
    with pytest.raises(ConfigError, match="--template"):
        plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=Program("py", None))


def test_llamafactory_vllm_backend_refuses_a_second_adapter(tmp_path: Path) -> None:
    spec = ServeSpec(
        engine="llamafactory",
        model="/m/b",
        template="qwen",
        infer_backend="vllm",
        adapters=(adapter(tmp_path, "a"), adapter(tmp_path, "c")),
    )
    with pytest.raises(ConfigError, match=r"applies only the first adapter.*--engine vllm"):
        plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=Program("py", None))


def test_llamacpp_config_names_base_and_each_adapter(tmp_path: Path) -> None:
    spec = ServeSpec(
        engine="llamacpp",
        model="/m/smol.gguf",
        adapters=(Adapter("arith", Path("/a/arith.gguf")),),
        port=8099,
    )
    launch = plan_launch(
        spec, python=None, api_key=KEY, workdir=tmp_path, program=Program("py", None)
    )
    config = tmp_path / "llamacpp-8099.json"
    assert launch.argv == ("py", "-m", "llama_cpp.server", "--config_file", str(config))
    data = json.loads(launch.files[config])
    assert [m["model_alias"] for m in data["models"]] == ["smol", "arith"]
    assert data["models"][1]["lora_path"] == "/a/arith.gguf"
    assert data["api_key"] == KEY
    assert config in launch.secret_files
    assert launch.answers_any_name


def test_locate_program_missing_python(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        locate_program(
            module="vllm",
            script="vllm",
            python=str(tmp_path / "nope"),
            install_hint="x",
            what="vLLM",
        )


def test_locate_program_python_without_the_engine_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(
        ServeError,
        match=r"cannot import no_such_engine_mod\. Install it there: .* pip install thing",
    ):
        locate_program(
            module="no_such_engine_mod",
            script=None,
            python=sys.executable,
            install_hint="thing",
            what="Engine",
        )


def test_locate_program_finds_a_script_beside_python(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python"
    py.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    script = bin_dir / "json-engine"
    script.write_text("#!/bin/sh\n")
    found = locate_program(
        module="json", script="json-engine", python=str(py), install_hint="", what="x"
    )
    assert found == Program(str(py), str(script))


def test_nothing_installed_anywhere_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"is not installed.*--python"):
        locate_program(
            module="no_such_engine_mod",
            script="no-such-engine-cmd",
            python=None,
            install_hint="thing",
            what="Engine",
        )


def test_vllm_prefers_its_python_module_over_the_vllm_command(tmp_path: Path) -> None:
    # vllm-cpu's `vllm` command dies at start; the module takes the same flags.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "python"
    py.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then exit 0; fi\n')
    py.chmod(0o755)
    (bin_dir / "vllm").write_text(f"#!{py}\n")
    # The stand-in answers yes to every check, so it also counts as the CPU build.
    assert vllm.locate(str(py)) == Program(str(py), None, cpu_build=True)


def test_vllm_cpu_build_gets_a_memory_share_it_can_start_with(tmp_path: Path) -> None:
    spec = ServeSpec(engine="vllm", model="/m/b")
    cpu = Program("py", None, cpu_build=True)
    argv = plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=cpu).argv
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"
    gpu = plan_launch(
        spec, python=None, api_key=None, workdir=tmp_path, program=Program("py", None)
    )
    assert "--gpu-memory-utilization" not in gpu.argv
    spec = ServeSpec(engine="vllm", model="/m/b", options={"vllm_gpu_util": 0.2})
    argv = plan_launch(spec, python=None, api_key=None, workdir=tmp_path, program=cpu).argv
    assert argv.count("--gpu-memory-utilization") == 1
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.2"
