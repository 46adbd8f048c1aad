"""The account of a journal: what state its last run is in (`run_status`), what it cost
(`summarize`), and both for a journal file opened read-only (`status_summary`).

Journals are real files: built with the Journal API (sessions begun, ended, or left open as a
killed run leaves them), or written by `squall.run` against the in-repo simulator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import squall
from squall import api
from squall.account import (
    RunStatus,
    read_run_record,
    run_status,
    status_summary,
    summarize,
)
from squall.config import Price
from squall.errors import JournalError
from squall.events import KeyState, KeyStats, RunStats
from squall.journal import Journal
from squall.records import Completion, ErrorInfo
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, Simulator

KEY = "sk-acct-TESTKEY000011112222beef"
PRICES = {"m": Price(input=1.0, output=2.0)}
SimulatorFactory = Callable[..., Simulator]


def _answer(i: int) -> Completion:
    return Completion(
        text=f"answer {i}", finish_reason="stop", prompt_tokens=10, completion_tokens=20
    )


def build_journal(
    path: Path,
    *,
    rows: int = 4,
    done: int = 0,
    failed: int = 0,
    sent: int = 0,
    outcome: str | None = "completed",
    stop_reason: str | None = None,
    session: bool = True,
    prices: dict[str, Price] | None = None,
    models: dict[str, str] | None = None,
) -> Path:
    """Write a journal as a run would: rows, one session, its meta; return its path.

    `outcome=None` leaves the session open, as a killed run does; `sent` rows stay in flight.
    """
    with Journal.open(path) as jr:
        jr.ingest((i, i + 1, f"fp{i}") for i in range(rows))
        jr.set_meta("models", json.dumps(models if models is not None else {"a": "m"}))
        jr.set_meta(
            "prices",
            json.dumps({k: v.model_dump() for k, v in (prices or {}).items()}),
        )
        if session:
            jr.begin_session()
        for i in range(done):
            jr.mark_sent(i)
            jr.record_success(i, _answer(i), latency_s=0.1, attempts=1, endpoint="a", model="m")
        for i in range(done, done + failed):
            jr.mark_sent(i)
            jr.record_failure(
                i,
                ErrorInfo("bad_request", 400, "no"),
                attempts=1,
                endpoint="a",
                retryable=False,
            )
        for i in range(done + failed, done + failed + sent):
            jr.mark_sent(i)
        if session and outcome is not None:
            jr.set_meta("last_stop_reason", stop_reason or "")
            jr.end_session(outcome)  # type: ignore[arg-type]  # tests pass known outcomes
    return path


# -- run_status --------------------------------------------------------------------------------


def test_a_journal_without_runs_has_status_unknown(tmp_path: Path) -> None:
    path = build_journal(tmp_path / "j.sqlite", session=False)
    with Journal.open(path, read_only=True) as jr:
        assert run_status(jr.statistics(), None, live=False) == RunStatus("unknown")


def test_a_completed_run_has_no_reason_even_if_one_was_recorded(tmp_path: Path) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=4, stop_reason="left over")
    with Journal.open(path, read_only=True) as jr:
        assert run_status(jr.statistics(), "left over", live=False) == RunStatus("completed")


def test_a_stopped_run_gives_its_recorded_reason(tmp_path: Path) -> None:
    path = build_journal(
        tmp_path / "j.sqlite", done=1, outcome="stopped", stop_reason="max_cost reached"
    )
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    assert run_status(stats, "max_cost reached", live=False) == RunStatus(
        "stopped", "max_cost reached"
    )
    assert run_status(stats, "", live=False) == RunStatus("stopped", None)


def test_a_run_whose_process_died_is_interrupted_with_its_requests_in_flight(
    tmp_path: Path,
) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=1, sent=2, outcome=None)
    with Journal.open(path, read_only=True) as jr:
        state = run_status(jr.statistics(), None, live=False)
    assert state.status == "interrupted"
    assert state.reason is not None and "with 2 request(s) in flight" in state.reason


def test_a_run_holding_the_journal_is_running_with_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path) as writer:
        writer.ingest((i, i + 1, f"fp{i}") for i in range(3))
        writer.begin_session()
        writer.mark_sent(0)
        writer.commit()
        with Journal.open(path, read_only=True) as jr:
            live = jr.in_use_elsewhere()
            state = run_status(jr.statistics(), None, live=live)
    assert live
    assert state == RunStatus("running", f"pid {os.getpid()}; 1 request(s) in flight now")


# -- summarize ---------------------------------------------------------------------------------


def test_summarize_prices_each_endpoints_tokens_by_its_model(tmp_path: Path) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=3, failed=1)
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    summary = summarize(stats, PRICES, {"a": "m"}, status="completed")
    assert (summary.total, summary.done, summary.failed, summary.pending) == (4, 3, 1, 0)
    assert (summary.prompt_tokens, summary.completion_tokens) == (30, 60)
    assert summary.cost == pytest.approx((30 * 1.0 + 60 * 2.0) / 1e6)
    assert [(f.reason, f.count, f.example_rows) for f in summary.failures] == [
        ("bad_request", 1, (4,))
    ]


def test_summarize_cost_is_unknown_without_a_price_for_the_model(tmp_path: Path) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=2)
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    assert summarize(stats, {}, {"a": "m"}, status="completed").cost is None
    assert summarize(stats, {"other": Price()}, {"a": "m"}, status="completed").cost is None


def test_summarize_costs_nothing_when_nothing_was_answered_at_known_prices(
    tmp_path: Path,
) -> None:
    path = build_journal(tmp_path / "j.sqlite")
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    assert summarize(stats, PRICES, {"a": "m"}, status="completed").cost == 0.0
    assert summarize(stats, {}, {"a": "m"}, status="completed").cost is None


def test_summarize_agrees_with_api_summarize(tmp_path: Path) -> None:
    # api.summarize is to become account.summarize; until then they must give the same account.
    path = build_journal(tmp_path / "j.sqlite", done=2, failed=1, outcome="stopped")
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    for prices in (PRICES, {}):
        ours = summarize(
            stats, prices, {"a": "m"}, status="stopped", reason="why", journal=path, wall_s=1.5
        )
        theirs = api.summarize(
            stats, prices, {"a": "m"}, status="stopped", reason="why", journal=path, wall_s=1.5
        )
        assert ours == theirs


# -- read_run_record and status_summary --------------------------------------------------------


def test_read_run_record_returns_models_prices_and_stop_reason(tmp_path: Path) -> None:
    path = build_journal(
        tmp_path / "j.sqlite", outcome="stopped", stop_reason="no usable key", prices=PRICES
    )
    with Journal.open(path, read_only=True) as jr:
        record = read_run_record(jr)
    assert record.models == {"a": "m"}
    assert record.prices == PRICES
    assert record.last_stop_reason == "no usable key"


def test_status_summary_of_a_killed_run_counts_its_requests_in_flight_at_the_crash(
    tmp_path: Path,
) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=1, sent=2, outcome=None, prices=PRICES)
    summary = status_summary(path)
    assert summary.status == "interrupted"
    assert (summary.in_flight, summary.in_flight_at_crash) == (2, 2)
    assert summary.cost == pytest.approx((10 * 1.0 + 20 * 2.0) / 1e6)
    assert summary.journal == str(path)


def test_status_summary_of_a_live_run_counts_nothing_in_flight_at_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    build_journal(path, done=1, sent=2, outcome=None)  # a crash left 2 in flight...
    with Journal.open(path) as writer:  # ...and a new run holds the journal now
        writer.begin_session()
        summary = status_summary(path)
    assert summary.status == "running"
    assert (summary.in_flight, summary.in_flight_at_crash) == (2, 0)


def test_status_summary_of_a_missing_journal_raises_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal at"):
        status_summary(tmp_path / "missing.sqlite")


@pytest.fixture
def sim(simulator: SimulatorFactory) -> Iterator[Simulator]:
    yield simulator(SimConfig(keys=(SimKey(key=KEY),)))


def test_status_summary_of_a_real_run_matches_its_own_account(
    tmp_path: Path, sim: Simulator
) -> None:
    endpoint = squall.EndpointConfig(
        name="sim", base_url=sim.base_url, keys=(squall.KeyConfig(key=ApiKey(KEY)),), rpm=math.inf
    )
    config = squall.RunConfig(
        model="sim-model",
        endpoints=(endpoint,),
        progress="off",
        prices={"sim-model": Price(input=0.5, output=1.5)},
    )
    out = tmp_path / "out.jsonl"
    result = squall.run([f"what is {i} + 1?" for i in range(12)], output=out, config=config)
    summary = status_summary(result.journal)
    assert summary.status == "completed" and summary.reason is None
    assert (summary.total, summary.done, summary.failed) == (12, 12, 0)
    assert summary.cost == pytest.approx(result.summary.cost)
    assert summary.cost is not None and summary.cost > 0
    assert (summary.in_flight, summary.in_flight_at_crash) == (0, 0)


# -- retries and keys over every session -------------------------------------------------------


def _key(label: str, *, sent: int = 0, ok: int = 0, endpoint: str = "a") -> KeyStats:
    return KeyStats(
        label=label,
        endpoint=endpoint,
        masked_key="sk-...beef",
        state=KeyState.ACTIVE,
        in_flight=0,
        sent=sent,
        ok=ok,
        rate_limited=0,
        errors=0,
        rpm=600.0,
        tpm=None,
        discovering=True,
        rate_now=1.0,
        window=4,
    )


def _two_sessions(path: Path) -> Path:
    """A journal of 2 rows over two sessions: 3 retries, key a#1 in both, a#2 in the first."""
    with Journal.open(path) as jr:
        jr.ingest((i, i + 1, f"fp{i}") for i in range(2))
        jr.begin_session()
        for _ in range(2):
            jr.mark_sent(0)
            jr.record_retry(0, ErrorInfo("server_error", 500, "oops"))
        jr.end_session("interrupted", [_key("a#1", sent=1), _key("a#2", sent=1)])
        jr.begin_session()
        jr.mark_sent(1)
        jr.record_retry(1, ErrorInfo("server_error", 500, "oops"))
        for i in range(2):
            jr.mark_sent(i)
            jr.record_success(i, _answer(i), latency_s=0.1, attempts=1, endpoint="a", model="m")
        jr.end_session("completed", [_key("a#1", sent=3, ok=2)])
    return path


def test_summarize_takes_retries_and_key_counters_from_every_session(tmp_path: Path) -> None:
    path = _two_sessions(tmp_path / "j.sqlite")
    with Journal.open(path, read_only=True) as jr:
        stats = jr.statistics()
    live = _key("a#1", sent=3, ok=2)
    summary = summarize(
        stats, PRICES, {"a": "m"}, status="completed", run=RunStats(retries=1), keys=(live,)
    )
    assert (summary.requests_sent, summary.retries) == (5, 3)
    one, two = summary.keys
    # This session's key keeps its snapshot, with the counters of both sessions.
    assert one == dataclasses.replace(live, sent=4, ok=2)
    assert (two.label, two.sent, two.ok, two.in_flight, two.rpm) == ("a#2", 1, 0, 0, None)


def test_summarize_falls_back_to_this_sessions_counters_where_the_journal_has_none(
    tmp_path: Path,
) -> None:
    path = build_journal(tmp_path / "j.sqlite", done=2)
    with Journal.open(path, read_only=True) as jr:
        stats = dataclasses.replace(jr.statistics(), retries=None)  # as schema 2 reads
    live = (_key("a#1", sent=2, ok=2),)
    summary = summarize(
        stats, PRICES, {"a": "m"}, status="completed", run=RunStats(retries=7), keys=live
    )
    assert (summary.retries, summary.keys) == (7, live)


def test_status_summary_counts_retries_and_keys_of_every_session(tmp_path: Path) -> None:
    summary = status_summary(_two_sessions(tmp_path / "j.sqlite"))
    assert (summary.status, summary.requests_sent, summary.retries) == ("completed", 5, 3)
    assert [(k.label, k.sent, k.ok) for k in summary.keys] == [("a#1", 4, 2), ("a#2", 1, 0)]
    text = str(summary)
    assert "requests sent: 5, retries: 3" in text
    assert "a#1 (sk-...beef): 4 sent, 2 ok" in text
