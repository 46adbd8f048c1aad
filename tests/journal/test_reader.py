"""The journal's reading half: rows to send (with their stored requests), results, the
merged output's rows, and statistics."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from journal_support import BAD, RATE, answer, body_of, data_of, full_rows, rows, succeed

from squall.errors import JournalError
from squall.journal import IngestRow, Journal, StoredRequest
from squall.records import RowState

# -- rows to send; results -----------------------------------------------------------------


def test_iter_todo_after_crash(path: Path) -> None:
    j = Journal.open(path)
    j.ingest(rows(8))
    succeed(j, 0)
    j.mark_sent(1)  # in flight when the run "dies"
    j.mark_sent(2)
    j.record_failure(2, RATE, attempts=5, endpoint="a", retryable=True)
    j.mark_sent(3)
    j.record_failure(3, BAD, attempts=1, endpoint="a", retryable=False)
    j.mark_sent(4)
    j.record_retry(4, RATE)
    j.mark_sent(6)
    # The run "dies" here: nothing more is recorded; the next run opens the file.
    j.close()

    j = Journal.open(path)
    try:
        assert j.in_flight_at_open() == 2
        assert list(j.iter_todo()) == [1, 2, 4, 5, 6, 7]
        assert list(j.iter_todo(retry_failed=True)) == [1, 2, 3, 4, 5, 6, 7]
        assert j.statistics().sent == 2
    finally:
        j.close()


def test_iter_todo_yields_each_row_once_while_rows_change(journal: Journal) -> None:
    journal.ingest(rows(12_000))
    seen = []
    for i in journal.iter_todo():
        seen.append(i)
        journal.mark_sent(i)
        if i % 2:
            journal.record_retry(i, RATE)  # back to PENDING: must not come round again
        else:
            journal.record_success(i, answer(i), latency_s=0.1, attempts=1, endpoint="a")
    assert seen == list(range(12_000))


def test_iter_results_carry_every_field(journal: Journal) -> None:
    journal.ingest(rows(3))
    journal.mark_sent(0)
    journal.record_success(
        0, answer(0, raw='{"id": "x"}'), latency_s=0.5, attempts=2, endpoint="ep1", model="m"
    )
    journal.mark_sent(1)
    journal.record_failure(1, BAD, attempts=1, endpoint="ep2", retryable=False)
    first, second, third = list(journal.iter_results())
    assert first.state == RowState.DONE
    assert first.output_fields() == {
        "response": "answer 0",
        "error": None,
        "finish_reason": "stop",
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "latency_s": 0.5,
        "attempts": 2,
        "endpoint": "ep1",
    }
    assert first.raw == '{"id": "x"}'
    assert second.state == RowState.FAILED
    assert second.error == BAD
    assert second.endpoint == "ep2"
    assert third.state == RowState.PENDING and third.response is None


# -- accounts -------------------------------------------------------------------------------


def test_statistics(path: Path) -> None:
    with Journal.open(path) as j:
        j.check_settings("fp", {"model": "m1"}, input_name="in.jsonl")
        j.begin_session()
        j.ingest(rows(20))
        for i in range(5):
            succeed(j, i, endpoint="a", model="m1")
        for i in range(5, 8):
            succeed(j, i, endpoint="b", model="m2")
        for i in range(8, 15):
            j.mark_sent(i)
            j.record_failure(i, BAD, attempts=1, endpoint="a", retryable=False)
        j.mark_sent(15)
        j.record_retry(15, RATE)
        j.mark_sent(15)
        j.record_failure(15, RATE, attempts=2, endpoint="b", retryable=True)
        j.mark_sent(16)
        j.end_session("interrupted")
        stats = j.statistics()
    assert (stats.total, stats.done, stats.failed, stats.pending, stats.sent) == (20, 8, 8, 3, 1)
    assert stats.failures["bad_request"].count == 7
    assert stats.failures["bad_request"].rows == [8, 9, 10, 11, 12]
    assert stats.failures["rate_limited"].rows == [15]
    assert stats.requests_sent == 5 + 3 + 7 + 2 + 1
    assert (stats.prompt_tokens, stats.completion_tokens) == (80, 160)
    assert stats.tokens_by_endpoint["a"].rows == 5
    assert stats.tokens_by_endpoint["b"].prompt_tokens == 30
    assert stats.tokens_by_model["m2"].completion_tokens == 60
    assert stats.settings == {"model": "m1"}
    assert stats.input_name == "in.jsonl"
    assert stats.created_at is not None
    assert stats.first_activity is not None and stats.last_activity is not None
    assert stats.first_activity <= stats.last_activity
    assert stats.wall_s >= 0
    assert [s.outcome for s in stats.sessions] == ["interrupted"]


# -- requests and output rows from the journal (schema 2) -------------------------------------


def test_iter_todo_requests_follow_iter_todo(path: Path) -> None:
    with Journal.open(path) as j:
        j.ingest(full_rows(12_000, batch=True))
        succeed(j, 0)
        j.mark_sent(1)
        j.mark_sent(2)
        j.record_failure(2, RATE, attempts=5, endpoint="a", retryable=True)
        j.mark_sent(3)
        j.record_failure(3, BAD, attempts=1, endpoint="a", retryable=False)
    with Journal.open(path) as j:
        for retry_failed in (False, True):
            got = list(j.iter_todo_requests(retry_failed=retry_failed))
            assert [r.index for r in got] == list(j.iter_todo(retry_failed=retry_failed))
        first = next(j.iter_todo_requests())
        assert first == StoredRequest(1, 3, body_of(1), 11, "m-1", "req-1")
        assert 3 not in {r.index for r in j.iter_todo_requests()}


def test_iter_todo_requests_each_row_once_while_rows_change(journal: Journal) -> None:
    journal.ingest(full_rows(12_000))
    seen = []
    for req in journal.iter_todo_requests():
        seen.append(req.index)
        assert req.body == body_of(req.index)
        journal.mark_sent(req.index)
        if req.index % 2:
            journal.record_retry(req.index, RATE)
        else:
            journal.record_success(
                req.index, answer(req.index), latency_s=0.1, attempts=1, endpoint="a"
            )
    assert seen == list(range(12_000))


def test_iter_todo_requests_refuses_rows_without_a_body(journal: Journal) -> None:
    journal.ingest([*full_rows(3), (3, 5, "fp-3"), IngestRow(4, 6, "fp-4", data={"a": 1})])
    with pytest.raises(JournalError, match=r"no request for row 3 \(line 5\).*Rerun"):
        next(journal.iter_todo_requests())
    succeed(journal, 3)
    succeed(journal, 4)
    # Answered rows need no request: only the rows to send are checked.
    assert [r.index for r in journal.iter_todo_requests()] == [0, 1, 2]


def test_iter_output_pairs_data_and_results(journal: Journal) -> None:
    journal.ingest([*full_rows(3), (3, 5, "fp-3")])
    succeed(journal, 0)
    journal.mark_sent(1)
    journal.record_failure(1, BAD, attempts=1, endpoint="a", retryable=False)
    journal.mark_sent(2)
    journal.record_retry(2, RATE)
    out = list(journal.iter_output())
    assert [o.index for o in out] == [0, 1, 2, 3]
    assert [o.data for o in out] == [data_of(0), data_of(1), data_of(2), None]
    assert out[0].result.response == "answer 0" and out[0].result.state == RowState.DONE
    assert out[1].result.error == BAD and out[1].result.state == RowState.FAILED
    assert out[2].result.state == RowState.PENDING and out[2].result.error == RATE
    assert [o.result.index for o in out] == [0, 1, 2, 3]


@pytest.mark.slow  # ~3 s: tracemalloc slows the rows read
def test_iter_output_streams_in_bounded_memory(journal: Journal) -> None:
    n = 25_000
    journal.ingest(full_rows(n))
    tracemalloc.start()
    try:
        count = 0
        for o in journal.iter_output():
            count += o.data is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    # All rows at once would take ~25 MB; a 5000-row page a few.
    assert peak < 10_000_000, peak
