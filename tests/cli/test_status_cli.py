"""`squall status JOURNAL` prints the account the end of a run prints: requests and retries
of every session, and the table of keys; `--json` holds them too. Journals are real files:
built with the Journal API, left by an older squall (schema 2), or written by `squall run`
against a simulator process that answers some requests with a 500, so rows are retried.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    KEY1,
    SimFactory,
    arith_rows,
    assert_complete_output,
    one_line,
    read_jsonl,
    run_squall,
    write_config,
    write_jsonl,
)

from squall.events import KeyState, KeyStats
from squall.journal import APPLICATION_ID, Journal, migrate
from squall.records import Completion, ErrorInfo
from squall.redact import mask_key
from squall.simulator import SimConfig, SimKey

RATE = ErrorInfo("rate_limited", 429, "slow down")


def key(label: str, *, sent: int, ok: int, rate_limited: int = 0, errors: int = 0) -> KeyStats:
    return KeyStats(
        label=label,
        endpoint="sim",
        masked_key=mask_key(KEY1),
        state=KeyState.ACTIVE,
        in_flight=0,
        sent=sent,
        ok=ok,
        rate_limited=rate_limited,
        errors=errors,
        rpm=None,
        tpm=None,
        discovering=False,
        rate_now=0.0,
    )


def status(journal: Path, *args: str) -> str:
    res = run_squall("status", journal, *args, cwd=journal.parent)
    assert res.returncode == 0, res.stderr
    return res.stdout


def status_json(journal: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(status(journal, "--json"))
    return data


def two_sessions(path: Path) -> Path:
    """Write a journal of 3 rows answered over two sessions with 4 retries; return its path."""
    answer = Completion(text="2", finish_reason="stop", prompt_tokens=5, completion_tokens=1)
    with Journal.open(path) as jr:
        jr.ingest((i, i + 1, f"fp{i}") for i in range(3))
        jr.begin_session()
        for _ in range(3):
            jr.mark_sent(0)
            jr.record_retry(0, RATE)
        jr.end_session("interrupted", [key("sim#0", sent=3, ok=0, rate_limited=3)])
        jr.begin_session()
        jr.mark_sent(1)
        jr.record_retry(1, RATE)
        for i in range(3):
            jr.mark_sent(i)
            jr.record_success(i, answer, latency_s=0.1, attempts=1, endpoint="sim")
        jr.end_session("completed", [key("sim#0", sent=4, ok=3, rate_limited=1)])
    return path


def test_status_counts_retries_of_every_session(tmp_path: Path) -> None:
    journal = two_sessions(tmp_path / "j.sqlite")
    data = status_json(journal)
    assert (data["requests_sent"], data["retries"]) == (7, 4)
    assert "7 sent, 4 retries" in one_line(status(journal))


def test_status_shows_the_key_table(tmp_path: Path) -> None:
    journal = two_sessions(tmp_path / "j.sqlite")
    text = status(journal)
    header = next(line for line in text.splitlines() if "429" in line)
    assert header.split() == ["key", "sent", "ok", "429", "errors", "state"]
    row = next(line for line in text.splitlines() if line.strip().startswith("sim#0"))
    assert row.split() == ["sim#0", f"({mask_key(KEY1)})", "7", "3", "4", "0", "active"]
    assert KEY1 not in text
    assert status_json(journal)["keys"] == [
        {
            "label": "sim#0",
            "endpoint": "sim",
            "masked_key": mask_key(KEY1),
            "sent": 7,
            "ok": 3,
            "rate_limited": 4,
            "errors": 0,
            "state": "active",
        }
    ]


def test_status_of_an_old_journal_without_key_stats(tmp_path: Path) -> None:
    # As a schema-2 squall left it: one row answered after a retry, which it did not count.
    journal = tmp_path / "old.sqlite"
    conn = sqlite3.connect(journal, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn, upto=2)
        conn.executemany(
            "INSERT INTO rows (idx, line, fingerprint) VALUES (?, ?, ?)",
            [(0, 2, "a"), (1, 3, "b")],
        )
        conn.execute(
            "UPDATE rows SET state = 2, response = 'x', endpoint = 'sim', sent_count = 2, "
            "prompt_tokens = 3, completion_tokens = 1, updated_at = 2.0 WHERE idx = 0"
        )
        conn.execute(
            "INSERT INTO sessions (started_at, ended_at, outcome, pid) "
            "VALUES (1.0, 2.0, 'stopped', 1)"
        )
    finally:
        conn.close()
    data = status_json(journal)
    assert (data["status"], data["done"], data["pending"]) == ("stopped", 1, 1)
    assert (data["requests_sent"], data["retries"], data["keys"]) == (2, 0, [])
    text = status(journal)
    assert "2 sent" in text and "429" not in text  # what it has, and no key table
    conn = sqlite3.connect(journal)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2  # not migrated
    finally:
        conn.close()


# -- end to end -----------------------------------------------------------------------------

FAULTY = SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.005, p_500=0.25, seed=7)


def run_twice(tmp_path: Path, sim_proc: SimFactory) -> tuple[Path, list[str]]:
    """Run 20 rows, then the same 20 and 20 more, against a simulator that fails 1 request
    in 4 with a 500; return the journal and each run's stderr."""
    sim = sim_proc(FAULTY)
    config = write_config(tmp_path / "squall.toml", sim.url)
    with config.open("a", encoding="utf-8") as f:
        f.write("[retry]\nbackoff_base_s = 0.01\nbackoff_max_s = 0.05\n")
    errs = []
    for n in (20, 40):
        write_jsonl(tmp_path / "in.jsonl", arith_rows(n))
        res = run_squall("run", "in.jsonl", "-o", "out.jsonl", "-c", config, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        errs.append(res.stderr)
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), arith_rows(40))
    journal = tmp_path / "out.jsonl.squall.sqlite"
    data = status_json(journal)
    # Every row was answered: each request beyond a row's first was a retry.
    assert data["retries"] == data["requests_sent"] - 40 > 0
    assert data["requests_sent"] == len(sim.ledger())
    return journal, errs


@pytest.mark.slow
def test_status_counts_the_retries_of_every_squall_run(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    run_twice(tmp_path, sim_proc)


def requests_line(text: str) -> str:
    found = re.search(r"requests\s+(\d+ sent, \d+ retries)", text)
    assert found, text
    return found.group(1)


@pytest.mark.slow
def test_the_end_of_a_run_and_status_print_the_same_account(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    journal, errs = run_twice(tmp_path, sim_proc)
    data = status_json(journal)
    assert [k["label"] for k in data["keys"]]
    assert sum(k["sent"] for k in data["keys"]) == data["requests_sent"]
    assert sum(k["ok"] for k in data["keys"]) == 40
    text = status(journal)
    assert requests_line(errs[-1]) == requests_line(text)
    assert [line for line in errs[-1].splitlines() if "429" in line] == [
        line for line in text.splitlines() if "429" in line
    ]
