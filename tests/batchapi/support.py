"""Equipment for the end-to-end `--batch-api` tests: real processes, real HTTP, real SQLite.

The simulator runs as its own process with a ledger file, so it (and the batches it holds in
memory) survives while a `python -m squall run ... --batch-api` process is killed; the same
simulator serves the kill and the resume. The journal is read read-only while a run holds it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from squall.journal import BatchRecord, Journal
from squall.simulator import BatchSettings, LedgerEntry, SimConfig, SimKey, expected_answer
from squall.testing import start_simulator_process, stop_process

# tests/cli's equipment, reached as tests/ray reaches it (mypy: tests/_mypy_path).
_CLI_TESTS = str(Path(__file__).resolve().parent.parent / "cli")
if _CLI_TESTS not in sys.path:
    sys.path.insert(0, _CLI_TESTS)
import cli_support  # noqa: E402

KEY = "sk-batchkill-SECRET0000aaaa1111"
FAST = BatchSettings(validating_s=0.01, line_s=0.0005, finalizing_s=0.01, cancelling_s=0.01)
WAIT_S = 30.0
"""The most any wait loop of these tests waits."""


def batches(**changes: float) -> BatchSettings:
    """Return the fast batch timings with `changes` (the delay under test)."""
    return BatchSettings(**{**FAST.__dict__, **changes})


class SimProcess(cli_support.SimProcess):
    """A simulator process and its ledger file (tests/cli's), with the Batch API's reads."""

    def events(self, event: str) -> list[LedgerEntry]:
        """Return the ledger's entries of one kind ("batch_line", "request"...)."""
        return [e for e in self.ledger() if e.event == event]

    def get(self, path: str) -> Any:
        """GET `path` (under /v1) with the key; return the decoded JSON answer."""
        req = urllib.request.Request(
            self.url.rstrip("/") + path, headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


@contextmanager
def simulator(tmp_path: Path, settings: BatchSettings = FAST) -> Iterator[SimProcess]:
    """Run one simulator process (key KEY, batch timings `settings`) for a test."""
    ledger = tmp_path / "ledger.jsonl"
    config = SimConfig(keys=(SimKey(key=KEY),), batches=settings)
    proc, url = start_simulator_process(config, ledger_file=ledger)
    try:
        yield SimProcess(proc, url, ledger)
    finally:
        stop_process(proc)


prompt_for = cli_support.prompt_for
read_jsonl = cli_support.read_jsonl


def write_rows(path: Path, n: int) -> list[dict[str, Any]]:
    """Write `n` input rows (id, prompt) as JSON Lines to `path`; return them."""
    rows = [{"id": i, "prompt": prompt_for(i)} for i in range(n)]
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return rows


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def write_config(
    path: Path, url: str, *, prices: Mapping[str, float] | None = None, **top: object
) -> Path:
    """Write a squall TOML config: one endpoint at `url` with key ${K1}, `top` settings."""
    lines = [f"{k} = {_toml(v)}" for k, v in top.items()]
    lines.append('model = "sim-model"')
    lines += [
        "[[endpoints]]",
        'name = "sim"',
        f'base_url = "{url}"',
        'keys = ["${K1}"]',
        f"rpm = {math.inf!r}",
    ]
    if prices is not None:
        lines.append('[prices."sim-model"]')
        lines += [f"{k} = {v!r}" for k, v in prices.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def user_env() -> dict[str, str]:
    """Return the environment of a squall subprocess: no SQUALL_/OPENAI_ variables, the key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQUALL_", "OPENAI_"))}
    env.update(COLUMNS="240", NO_COLOR="1", K1=KEY)
    env.pop("FORCE_COLOR", None)
    return env


def squall_cmd(*args: str | Path) -> list[str]:
    """Return the command line of `squall ARGS` with this interpreter."""
    return [sys.executable, "-m", "squall", *(str(a) for a in args)]


def run_squall(
    *args: str | Path, cwd: Path, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `squall ARGS` in `cwd` to its end; return its exit code and output."""
    return subprocess.run(
        squall_cmd(*args),
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_squall(*args: str | Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start `squall ARGS` in `cwd` without waiting; its output goes to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            squall_cmd(*args), cwd=cwd, env=user_env(), stdout=out, stderr=subprocess.STDOUT
        )


def one_line(text: str) -> str:
    """Return `text` with whitespace runs folded to one space (rich may wrap)."""
    return " ".join(text.split())


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S, step: float = 0.01) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def journal_batches(journal: Path) -> list[BatchRecord]:
    """Return the journal's chunks, read-only ([] while the journal is not there yet)."""
    if not journal.exists():
        return []
    try:
        with Journal.open(journal, read_only=True) as jr:
            return jr.batches.records()
    except Exception:  # the run is creating it: its schema is not there yet
        return []


def kill_when(
    proc: subprocess.Popen[bytes], point: Callable[[], bool], what: str, *, sig: int = 9
) -> None:
    """Send `sig` (SIGKILL) to `proc` as soon as `point()` holds; fail if it never does."""
    reached = wait_until(lambda: proc.poll() is not None or point(), step=0.005)
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
    assert reached, f"the run never reached {what} within {WAIT_S:g} s"
    proc.send_signal(sig)


def check_paid_once(
    sim: SimProcess, journal: Path, out: Path, rows: Sequence[Mapping[str, Any]]
) -> list[BatchRecord]:
    """Check a finished batch run: every row its own answer, each line paid in one batch.

    Returns the journal's chunks.
    """
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    for r, want in zip(got, rows, strict=True):
        assert r["error"] is None, (r["id"], r["error"])
        assert r["response"] == expected_answer(str(want["prompt"])), r["id"]
    ledger = sim.ledger()
    answered = Counter(e.custom_id for e in ledger if e.event == "batch_line")
    assert set(answered) == {f"squall-{i}" for i in range(len(rows))}
    twice = {c: n for c, n in answered.items() if n != 1}
    assert not twice, f"custom_ids answered in more than one batch: {twice}"
    assert not [e for e in ledger if e.event == "request"], "rows were sent online"
    recs = journal_batches(journal)
    creates = [e for e in ledger if e.event == "batch_create"]
    assert len(creates) == len(recs), (
        f"{len(creates)} batches created for {len(recs)} chunks: a batch was paid twice"
    )
    assert all(not r.live and r.status == "completed" for r in recs), recs
    assert {r.batch_id for r in recs} == {e.batch_id for e in creates}
    return recs
