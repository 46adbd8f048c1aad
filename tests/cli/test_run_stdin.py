"""`squall run -`: standard input, read once, runs like a file (the one-way data flow).

The input is read once, into the journal; sending and the output come from the journal. So a
rerun with the same rows on standard input resumes, and the output can be written even though
the input cannot be read twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_support import (
    KEY1,
    SimFactory,
    arith_rows,
    assert_complete_output,
    read_jsonl,
    squall_cmd,
    user_env,
    write_config,
)

from squall.simulator import SimConfig, SimKey

FAST = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.002)


def _run_stdin(
    cwd: Path, text: str, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        squall_cmd("run", "-", *args),
        cwd=cwd,
        env=user_env(K1=KEY1),
        input=text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_reads_standard_input_once_and_writes_the_output(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(30)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    write_config(tmp_path / "squall.toml", sim.url)

    res = _run_stdin(tmp_path, text, "-o", "out.jsonl", "-c", "squall.toml", "--progress", "off")

    assert res.returncode == 0, res.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    assert len(sim.served()) == 30

    # The same rows again on standard input: nothing is sent again, the output is rewritten.
    again = _run_stdin(tmp_path, text, "-o", "out.jsonl", "-c", "squall.toml", "--progress", "off")
    assert again.returncode == 0, again.stderr
    assert len(sim.served()) == 30
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)


def test_changed_standard_input_is_caught_row_by_row(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(FAST)
    rows = arith_rows(10)
    write_config(tmp_path / "squall.toml", sim.url)
    first = "".join(json.dumps(r) + "\n" for r in rows)
    assert _run_stdin(tmp_path, first, "-o", "out.jsonl", "-c", "squall.toml").returncode == 0

    changed = [*rows[:4], {**rows[4], "prompt": "what is 100 + 1?"}, *rows[5:]]
    res = _run_stdin(
        tmp_path,
        "".join(json.dumps(r) + "\n" for r in changed),
        "-o",
        "out.jsonl",
        "-c",
        "squall.toml",
    )
    assert res.returncode != 0
    assert "line 5" in res.stderr
    assert len(sim.served()) == 10


def test_standard_input_without_an_output_or_journal_is_refused(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    # The CLI always has -o; from Python, `squall.run("-")` with neither an output nor a
    # journal cannot name its journal after content it may read only once.
    sim = sim_proc(FAST)
    write_config(tmp_path / "squall.toml", sim.url)
    code = (
        "import squall\n"
        "try:\n"
        "    squall.run('-', config='squall.toml', progress='off')\n"
        "except squall.ConfigError as e:\n"
        "    print(e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=user_env(K1=KEY1),
        input=json.dumps(arith_rows(1)[0]) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "--journal" in res.stdout and "read once" in res.stdout
    assert sim.served() == []
