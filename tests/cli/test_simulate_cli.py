"""`squall simulate` as its own process on 127.0.0.1: any key by default, the keys of --config
otherwise, and what it serves said at start."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import (
    arith_rows,
    assert_complete_output,
    one_line,
    read_jsonl,
    run_squall,
    squall_cmd,
    user_env,
    write_jsonl,
)

from squall.redact import mask_key
from squall.testing import stop_process

ANY_KEY = "sk-whatever-I-like-0123456789"
DECLARED = "sk-declared-KEY-00000000abcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Simulate:
    """A running `squall simulate` process: its URL and, once stopped, its stderr."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.stderr_path = tmp_path / f"simulate-{self.port}.err"
        with self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                squall_cmd("simulate", "--port", str(self.port), *args),
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=user_env(),
            )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stop(self) -> int:
        return stop_process(self.proc)

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def simulate(tmp_path: Path) -> Iterator[list[Simulate]]:
    started: list[Simulate] = []
    yield started
    for s in started:
        s.stop()


def start(started: list[Simulate], tmp_path: Path, *args: str) -> Simulate:
    sim = Simulate(tmp_path, *args)
    started.append(sim)
    return sim


def chat(url: str, key: str) -> int:
    """POST one chat completion with `key`; return the HTTP status."""
    body = {"model": "sim-model", "messages": [{"role": "user", "content": "what is 2 + 3?"}]}
    req = urllib.request.Request(
        f"{url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as e:
        return e.code


def test_simulate_accepts_any_key_by_default(tmp_path: Path, simulate: list[Simulate]) -> None:
    sim = start(simulate, tmp_path)
    assert sim.url == f"http://127.0.0.1:{sim.port}/v1"
    assert chat(sim.url, ANY_KEY) == 200
    assert chat(sim.url, "sk-another-one") == 200
    assert sim.stop() == 0
    err = sim.stderr()
    assert f"at {sim.url}" in err
    assert "any key is accepted" in err


def test_squall_run_goes_through_simulate_with_an_arbitrary_key(
    tmp_path: Path, simulate: list[Simulate]
) -> None:
    sim = start(simulate, tmp_path)
    rows = arith_rows(6)
    write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_squall(
        "run", "in.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--model", "sim-model",
        "--key-env", "MY_KEY", "--rpm", "inf", "--progress", "off",
        cwd=tmp_path,
        env=user_env(MY_KEY=ANY_KEY),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)


def test_simulate_with_config_keys_accepts_only_those_and_lists_them_masked(
    tmp_path: Path, simulate: list[Simulate]
) -> None:
    config = json.dumps({"keys": [{"key": DECLARED, "rpm": 600}], "models": ["m1"]})
    sim = start(simulate, tmp_path, "--config", config)
    assert chat(sim.url, DECLARED) == 200
    assert chat(sim.url, ANY_KEY) == 401
    assert sim.stop() == 0
    err = sim.stderr()
    assert f"key 1 ({mask_key(DECLARED)}): rpm 600" in err
    assert DECLARED not in err
    assert "models: m1" in err


def test_simulate_with_a_bad_config_exits_2_and_names_the_field(tmp_path: Path) -> None:
    res = run_squall("simulate", "--port", "0", "--config", '{"nope": 1}', cwd=tmp_path)
    assert res.returncode == 2
    assert "unknown field(s) ['nope']" in res.stderr


def test_a_single_key_answering_401_says_no_key_is_left_not_other_keys(
    tmp_path: Path, simulate: list[Simulate]
) -> None:
    config = json.dumps({"keys": [{"key": DECLARED, "dead": True}]})
    sim = start(simulate, tmp_path, "--config", config)
    write_jsonl(tmp_path / "in.jsonl", arith_rows(3))
    res = run_squall(
        "run", "in.jsonl", "-o", "out.jsonl", "--base-url", sim.url, "--model", "sim-model",
        "--key-env", "MY_KEY", "--progress", "plain",
        cwd=tmp_path,
        env=user_env(MY_KEY=DECLARED),
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    err = one_line(res.stderr)
    assert "answered HTTP 401: removed from the pool; no key is left" in err
    assert "other keys" not in err
