"""The adapter proof, against a fake engine whose adapters answer differently (or not)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.errors import ServeError
from squall.serve.client import ask
from squall.serve.probe import PROBE_PROMPTS, answers_unknown_name, compare_adapters
from squall.serve.process import EngineProcess

FAKE = Path(__file__).parent / "engines" / "fake_engine.py"
KEY = "sk-probe-test-22223333"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp_path: Path, *flags: str) -> tuple[EngineProcess, str]:
    port = free_port()
    argv = [sys.executable, str(FAKE), "--port", str(port), "--served-model-name", "base", *flags]
    proc = EngineProcess(argv, log_path=tmp_path / "engine.log", env={"VLLM_API_KEY": KEY})
    proc.start()
    url = f"http://127.0.0.1:{port}/v1"
    proc.wait_ready(url, ["base"], api_key=KEY, timeout_s=30, poll_s=0.05)
    return proc, url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[str]:
    proc, url = start(tmp_path, "--lora-modules", "arith=/a", "dud=/d", "--fake-same", "dud")
    try:
        yield url
    finally:
        proc.stop(grace_s=5)


def test_differing_adapter_is_applied_and_identical_one_is_not(engine: str) -> None:
    report = compare_adapters(engine, "base", ["arith", "dud"], api_key=KEY)
    arith, dud = report.verdicts
    assert (arith.name, arith.differ, arith.total, arith.applied) == (
        "arith",
        len(PROBE_PROMPTS),
        len(PROBE_PROMPTS),
        True,
    )
    assert arith.examples[0][1] == f"echo: {PROBE_PROMPTS[0]}"
    assert (dud.differ, dud.applied) == (0, False)
    assert not report.all_applied
    text = "\n".join(report.lines())
    assert "adapter 'arith': applied: 8/8" in text
    assert "adapter 'dud': NOT shown applied" in text


def test_engine_without_a_separate_base_is_not_judged(engine: str) -> None:
    report = compare_adapters(engine, None, ["arith"], api_key=KEY)
    assert report.verdicts == ()
    assert report.unjudged is not None and "cannot be asked beside it" in report.unjudged
    assert not report.all_applied
    assert report.lines()[0].startswith("adapter check: not judged")


def test_no_adapters_nothing_to_prove(engine: str) -> None:
    report = compare_adapters(engine, "base", [], api_key=KEY)
    assert report.verdicts == () and report.unjudged is None


def test_unknown_model_name_detection(engine: str, tmp_path: Path) -> None:
    assert answers_unknown_name(engine, api_key=KEY) is False
    proc, url = start(tmp_path, "--fake-any-name")
    try:
        assert answers_unknown_name(url, api_key=KEY) is True
    finally:
        proc.stop(grace_s=5)


def test_ask_reads_error_shapes(engine: str) -> None:
    with pytest.raises(ServeError, match="HTTP 404: The model `nope` does not exist"):
        ask(engine, "nope", "hi", api_key=KEY)
    with pytest.raises(ServeError, match="HTTP 401: Unauthorized") as info:
        ask(engine, "base", "hi", api_key="sk-wrong-key-zzzz")
    assert "sk-wrong-key-zzzz" not in str(info.value)
