"""`squall eval` as a user runs it: a real process, against the simulator on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.simulator import SimConfig, SimKey, Simulator

KEY = "sk-evalcli-0123456789abcdef"
SRC = Path(__file__).resolve().parents[1] / "src"
MAIN = "from squall.cli import main; main()"
# A plain `pip install squall`: `import matplotlib` fails as it would without the extra.
WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None; " + MAIN


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(keys=(SimKey(key=KEY),))) as s:
        yield s


def squall(cwd: Path, *args: str, entry: str = MAIN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("API_KEY", "BASE_URL"))}
    env |= {"PYTHONPATH": str(SRC), "API_KEY": KEY, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", entry, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_eval_arithmetic_two_models(sim: Simulator, tmp_path: Path) -> None:
    done = squall(
        tmp_path,
        "eval", "arithmetic",
        "--base-url", sim.base_url,
        "--model", "base", "--model", "arith",
        "-n", "12", "--operands", "2", "--seed", "3",
        "--rpm", "inf", "--tpm", "inf",
        "--progress", "off",
        "--out", "ev",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stdout
    out = tmp_path / "ev"
    names = {p.name for p in out.iterdir()}
    assert {"base.scored.jsonl", "arith.scored.jsonl", "report.md", "accuracy.png"} <= names
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [m["strict_accuracy"] for m in summary["models"]] == [1.0, 1.0]
    assert summary["operands"] == 2 and summary["seed"] == 3
    assert {e.key for e in sim.ledger()} == {"sk-...cdef"}
    shown = done.stdout + done.stderr
    assert KEY not in shown
    for path in out.iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_eval_arithmetic_without_matplotlib_skips_only_the_chart(
    sim: Simulator, tmp_path: Path
) -> None:
    done = squall(
        tmp_path,
        "eval", "arithmetic",
        "--base-url", sim.base_url, "--model", "base",
        "-n", "5", "--rpm", "inf", "--progress", "off", "--out", "ev",
        entry=WITHOUT_MATPLOTLIB,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Accuracy" in done.stdout and "100.0%" in done.stdout
    out = tmp_path / "ev"
    assert {p.name for p in out.iterdir()} >= {"base.scored.jsonl", "report.md", "summary.json"}
    assert len((out / "base.scored.jsonl").read_text("utf-8").splitlines()) == 5
    assert not (out / "accuracy.png").exists()
    assert "accuracy.png" not in (out / "report.md").read_text("utf-8")
    hint = [line for line in done.stderr.splitlines() if "chart skipped" in line]
    assert hint == ['chart skipped (accuracy.png needs matplotlib): pip install "squall[eval]"']
    assert sim.served_count() == 5


def test_eval_file_routes_a_path_and_default_out(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "qa.jsonl").write_text(
        '{"question": "2 + 2", "answer": "4"}\n{"question": "3 x 3", "answer": "10"}\n', "utf-8"
    )
    done = squall(
        tmp_path,
        "eval", "qa.jsonl",
        "--reference", "answer", "--scorer", "exact",
        "--template", "{question}",
        "--base-url", sim.base_url, "--model", "m",
        "--rpm", "inf", "--progress", "off", "--no-chart",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "evals" / "qa" / "summary.json").read_text("utf-8"))
    assert summary["models"][0]["accuracy"] == 0.5
    assert not (tmp_path / "evals" / "qa" / "accuracy.png").exists()


def test_eval_usage_errors_exit_2_before_sending(sim: Simulator, tmp_path: Path) -> None:
    (tmp_path / "qa.csv").write_text("prompt,answer\n1 + 1,2\n", "utf-8")
    base = ("--base-url", sim.base_url, "--model", "m")
    missing = squall(tmp_path, "eval", "qa.csv", "--reference", "label", *base)
    assert missing.returncode == 2
    assert "label" in missing.stderr and "prompt, answer" in missing.stderr
    scorer = squall(tmp_path, "eval", "qa.csv", "--reference", "answer", "--scorer", "fuzzy", *base)
    assert scorer.returncode == 2 and "unknown scorer" in scorer.stderr
    operands = squall(tmp_path, "eval", "arithmetic", "--operands", "1", *base)
    assert operands.returncode == 2 and "--operands" in operands.stderr
    no_endpoint = squall(tmp_path, "eval", "arithmetic", "--model", "m")
    assert no_endpoint.returncode == 2 and "--base-url" in no_endpoint.stderr
    assert sim.ledger() == []


def test_eval_help_lists_both_forms(tmp_path: Path) -> None:
    done = squall(tmp_path, "eval", "--help")
    assert done.returncode == 0
    assert "arithmetic" in done.stdout and "--reference" in done.stdout
    sub = squall(tmp_path, "eval", "arithmetic", "--help")
    assert sub.returncode == 0 and "--operands" in sub.stdout and "--template" in sub.stdout


def test_changed_template_says_restart_or_another_out(sim: Simulator, tmp_path: Path) -> None:
    base = ("eval", "arithmetic", "--base-url", sim.base_url, "--model", "m", "-n", "3")
    flags = ("--rpm", "inf", "--progress", "off", "--no-chart", "--out", "ev")
    assert squall(tmp_path, *base, *flags).returncode == 0
    changed = squall(tmp_path, *base, *flags, "--template", "what is {expression}?")
    assert changed.returncode == 2
    assert "--restart" in changed.stderr and "another --out" in changed.stderr
    assert sim.served_count() == 3


def test_eval_with_api_completions(sim: Simulator, tmp_path: Path) -> None:
    # A base model (or a LoRA on one) without a chat template: the expression goes as `prompt`.
    done = squall(
        tmp_path,
        "eval", "arithmetic",
        "--base-url", sim.base_url, "--model", "base", "--api", "completions",
        "-n", "6", "--rpm", "inf", "--progress", "off", "--out", "ev", "--no-chart",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stdout
    ledger = sim.ledger()
    # The chat route answers a body without messages with 400: these went to /v1/completions.
    assert len(ledger) == 6 and all(e.status == 200 for e in ledger)
    settings = json.loads(_journal_setting(tmp_path / "ev", "settings"))
    assert settings["api"] == "completions"


def test_eval_refuses_api_embeddings(sim: Simulator, tmp_path: Path) -> None:
    done = squall(
        tmp_path,
        "eval", "arithmetic", "--base-url", sim.base_url, "--model", "base",
        "--api", "embeddings", "-n", "2", "--progress", "off", "--out", "ev",
    )  # fmt: skip
    assert done.returncode != 0
    assert "--api 'embeddings'" in done.stderr and sim.ledger() == []


def _journal_setting(out: Path, key: str) -> str:
    import sqlite3

    (journal,) = out.glob("*.sqlite")
    with sqlite3.connect(journal) as db:
        (value,) = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(value)
