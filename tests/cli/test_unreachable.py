"""A mistyped base URL: the run stops within seconds, naming the URL, with nothing lost."""

from __future__ import annotations

import socket
from pathlib import Path

from cli_support import KEY1, arith_rows, run_squall, user_env, write_jsonl


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections to it are refused


def test_a_base_url_that_never_answers_stops_the_run_naming_it(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", arith_rows(5))
    url = f"http://127.0.0.1:{_closed_port()}/v1"

    # The subprocess timeout is the bound: the old behaviour waited 300 s before stopping.
    res = run_squall(
        "run",
        "in.jsonl",
        "-o",
        "out.jsonl",
        "--base-url",
        url,
        "--key-env",
        "K1",
        "--model",
        "m",
        "--progress",
        "plain",
        cwd=tmp_path,
        env=user_env(K1=KEY1),
        timeout=60,
    )

    assert res.returncode == 1, res.stderr
    assert "cannot connect to" in res.stderr and url in res.stderr
    assert "check base_url" in res.stderr
    assert "stopped" in res.stderr
    assert (tmp_path / "out.jsonl").exists()  # the rows, with empty answers, and resumable
    assert KEY1 not in res.stderr
