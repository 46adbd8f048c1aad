"""`squall ... --help` as a user reads it: option help printed whole, flags without a metavar."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import one_line, run_squall

COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["status", "--help"],
    ["simulate", "--help"],
    ["demo", "--help"],
    ["serve", "--help"],
    ["eval", "--help"],
    ["eval", "arithmetic", "--help"],
    ["eval", "file", "--help"],
]


def help_text(tmp_path: Path, *args: str) -> str:
    res = run_squall(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_max_cost_help_names_the_prices_table(tmp_path: Path) -> None:
    text = one_line(help_text(tmp_path, "run", "--help"))
    assert "Stop sending before the spend (USD, from [prices]) would pass this." in text


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_boolean_flags_show_no_metavar(tmp_path: Path, args: list[str]) -> None:
    text = help_text(tmp_path, *args)
    assert "<bool>" not in text
    help_line = next(line for line in text.splitlines() if "--help" in line)
    assert "<" not in help_line


def test_run_flags_read_as_flags_and_value_options_keep_their_type(tmp_path: Path) -> None:
    lines = help_text(tmp_path, "run", "--help").splitlines()
    for flag in ("--restart", "--retry-failed", "--dry-run"):
        line = next(line for line in lines if f"{flag} " in line)
        assert "<" not in line, line
    assert "<float>" in next(line for line in lines if "--max-cost" in line)


def test_a_flag_given_a_value_is_refused(tmp_path: Path) -> None:
    res = run_squall("run", "in.jsonl", "-o", "out.jsonl", "--restart", "true", cwd=tmp_path)
    assert res.returncode == 2
    assert "unexpected extra argument(s) (true)" in one_line(res.stderr)


def test_simulate_help_describes_its_settings(tmp_path: Path) -> None:
    text = one_line(help_text(tmp_path, "simulate", "--help"))
    assert "accepts any key" in text
    for setting in ('"keys"', '"rpm"', '"models"', '"latency_s"', '"p_429"', '"retry_after"'):
        assert setting in text
