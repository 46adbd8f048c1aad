"""The seed's own `vllm_api.yaml`, byte for byte, and `--help`, through the real `squall` command.

Fast (no engine runs): `--dry-run` plans the engine's command line with a stand-in Python that
answers serve's "can you import the engine?" checks with yes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import squall_command, squall_env

KEY = "sk-seed-yaml-test-31415926"
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


@pytest.fixture
def seed_dir(tmp_path: Path) -> Path:
    """A working folder laid out as the seed's: vllm_api.yaml, .env, ../saves/.../ner_epoch5/."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "vllm_api.yaml").write_text(SEED_YAML, encoding="utf-8")
    (work / ".env").write_text(f"API_KEY={KEY}\n")
    adapter = tmp_path / "saves" / "qwen2.5-7B" / "ner_epoch5"
    adapter.mkdir(parents=True)
    config = {"base_model_name_or_path": "qwen/Qwen2.5-7B-Instruct", "r": 16, "peft_type": "LORA"}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("#!/bin/sh\nexit 0\n")  # "yes, installed here"
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "llamafactory-cli").write_text("#!/bin/sh\nexit 0\n")
    return work


def squall(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        squall_command(*args),
        cwd=cwd,
        env=squall_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_seed_yaml_unchanged_plans_llamafactory_with_its_vllm_backend(seed_dir: Path) -> None:
    py = str(seed_dir.parent / "venv" / "bin" / "python")
    done = squall(seed_dir, "serve", "vllm_api.yaml", "--python", py, "--dry-run")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "llamafactory-cli api .squall/serve/llamafactory-8000.yaml" in err
    assert "API_MODEL_NAME=ner_epoch5" in err and "API_PORT=8000" in err
    # Every key of the seed reaches LLaMA-Factory's YAML as the seed wrote it.
    for line in (
        "model_name_or_path: qwen/Qwen2.5-7B-Instruct",
        "adapter_name_or_path: ../saves/qwen2.5-7B/ner_epoch5",
        "finetuning_type: lora",
        "template: qwen",
        "infer_backend: vllm",
        "vllm_enforce_eager: true",
    ):
        assert line in err
    # Its traps are said: the vllm backend's first-adapter-only rule, and the hub download.
    assert "applies only the first adapter" in err
    assert "model hub" in err
    assert KEY not in err


def test_seed_yaml_unchanged_on_vllm_itself(seed_dir: Path) -> None:
    py = str(seed_dir.parent / "venv" / "bin" / "python")
    done = squall(
        seed_dir, "serve", "vllm_api.yaml", "--engine", "vllm", "--python", py, "--dry-run"
    )
    assert done.returncode == 0, done.stderr
    command = next(x for x in done.stderr.splitlines() if x.startswith("would start:"))
    assert "-m vllm.entrypoints.openai.api_server --model qwen/Qwen2.5-7B-Instruct" in command
    assert "--served-model-name Qwen2.5-7B-Instruct" in command
    assert "--enforce-eager" in command  # vllm_enforce_eager: true
    assert "--lora-modules ner_epoch5=../saves/qwen2.5-7B/ner_epoch5" in command
    assert "--max-lora-rank 16" in command
    assert "VLLM_API_KEY=sk-...5926" in command and KEY not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--help",), ("serve", "eval", "run")),
        (("serve", "--help"), ("--lora", "--engine", "--write-endpoints", "--check")),
        (("eval", "--help"), ("arithmetic", "file")),
        (("eval", "arithmetic", "--help"), ("--model", "--operands", "--template", "--seed")),
    ],
)
def test_help_through_the_console_script(args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    script = Path(sys.executable).with_name("squall")
    if not script.is_file():
        pytest.skip("squall is not installed in this venv (pip install -e .)")
    done = subprocess.run(
        [str(script), *args], env=squall_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for word in expected:
        assert word in done.stdout, word
