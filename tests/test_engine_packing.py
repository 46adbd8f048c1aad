"""The real Engine sending packs of rows (embeddings) on FakeTransport and MemoryJournal.

A pack is one request, one lease and one retry budget; each of its rows is journaled as its
own, with its own vector (matched by index) and its share of the usage. A pack refused as a
bad request is split in halves until the bad row is alone.
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from squall.config import EndpointConfig, KeyConfig, RetryConfig, RunConfig
from squall.engine import Engine, EngineOutcome
from squall.errors import BadRequest, ServerError
from squall.events import RunStats
from squall.operations.embeddings import EmbeddingsOperation
from squall.pool import EndpointPool
from squall.ports import Lease
from squall.records import RequestSpec, RowState
from squall.redact import ApiKey
from squall.retry import RetryPolicy
from squall.testing import FakeClock, FakeTransport, MemoryJournal

KEY = "sk-packs-aaaaaaaaaaaa0000"


def vector(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)) % 97)]


def answer(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
    """Answer every input with its own vector, the items in reverse order (matched by index)."""
    inputs = body["input"]
    data = [{"index": i, "embedding": vector(t)} for i, t in enumerate(inputs)]
    return {"data": data[::-1], "usage": {"prompt_tokens": 10 * len(inputs)}}


def specs(n: int, tokens: int = 10, **body: Any) -> list[RequestSpec]:
    return [RequestSpec(i, i + 1, {"input": f"row {i}", **body}, tokens) for i in range(n)]


def run(
    rows: list[RequestSpec],
    handler: Any = answer,
    *,
    max_inputs: int = 4,
    max_tokens: int = 10_000,
    journal: MemoryJournal | None = None,
    **kw: Any,
) -> tuple[EngineOutcome, FakeTransport, MemoryJournal, Engine]:
    clock = FakeClock()
    ep = EndpointConfig(
        name="relay",
        base_url="http://127.0.0.1:9/v1",
        keys=(KeyConfig(key=ApiKey(KEY), rpm=math.inf),),
    )
    pool = EndpointPool.from_config(RunConfig(model="m", endpoints=(ep,)), clock)
    transport = FakeTransport(handler)
    journal = journal or MemoryJournal()
    retry = RetryConfig(max_attempts=3, backoff_base_s=0.5, backoff_max_s=2.0)
    eng = Engine(
        pool=pool,
        transport=transport,
        journal=journal,
        retry=RetryPolicy(retry, random.Random(1)),
        clock=clock,
        stats=RunStats(total=len(rows)),
        packing=EmbeddingsOperation(max_inputs=max_inputs, max_tokens=max_tokens),
        **kw,
    )
    outcome = asyncio.run(eng.run(rows))
    return outcome, transport, journal, eng


def sizes(transport: FakeTransport) -> list[int]:
    return [len(body["input"]) for _, body in transport.requests]


def test_rows_are_packed_by_count_and_each_journaled_with_its_own_vector() -> None:
    outcome, transport, journal, eng = run(specs(10), max_inputs=4)
    assert outcome == EngineOutcome("completed")
    assert sizes(transport) == [4, 4, 2]
    assert all(body["model"] == "m" for _, body in transport.requests)
    assert {i: a.text for i, a in journal.answers.items()} == {
        i: f"[{vector(f'row {i}')[0]},{vector(f'row {i}')[1]}]" for i in range(10)
    }
    assert all(a.prompt_tokens == 10 for a in journal.answers.values())
    assert eng.stats.done == 10 and eng.stats.prompt_tokens == 100


def test_rows_are_packed_by_estimated_tokens() -> None:
    _, transport, journal, _ = run(specs(9, tokens=30), max_inputs=100, max_tokens=100)
    assert sizes(transport) == [3, 3, 3]
    assert len(journal.answers) == 9


def test_rows_with_different_settings_never_share_a_pack() -> None:
    rows = specs(4, dimensions=2) + [
        RequestSpec(4 + i, 5 + i, {"input": f"row {4 + i}", "dimensions": 3}, 10) for i in range(2)
    ]

    def dims(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        n = body["dimensions"]
        data = [{"index": i, "embedding": [0.5] * n} for i in range(len(body["input"]))]
        return {"data": data, "usage": {"prompt_tokens": len(data)}}

    _, transport, journal, _ = run(rows, dims, max_inputs=8)
    assert [(len(b["input"]), b["dimensions"]) for _, b in transport.requests] == [(4, 2), (2, 3)]
    assert len(journal.answers) == 6


def test_every_row_of_a_pack_is_sent_before_it_leaves_and_done_after() -> None:
    journal = MemoryJournal()

    def check(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        for text in body["input"]:
            assert journal.states[int(text.split()[1])] is RowState.SENT
        return answer(lease, body)

    run(specs(6), check, max_inputs=3, journal=journal)
    for i in range(6):
        assert [e.verb for e in journal.events if e.index == i] == ["sent", "done"]
    assert journal.flushes == 1


def test_a_bad_row_in_a_pack_of_8_fails_alone_after_halving() -> None:
    def refuse(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        if "row 5" in body["input"]:
            raise BadRequest("HTTP 400: input 5 is too long", status=400)
        return answer(lease, body)

    outcome, transport, journal, eng = run(specs(8), refuse, max_inputs=8)
    assert outcome == EngineOutcome("completed")
    # 8 -> 4 + 4 -> (2 + 2) -> (1 + 1): 1 + 2 log2(8) requests.
    assert sizes(transport) == [8, 4, 4, 2, 2, 1, 1]
    assert sorted(journal.answers) == [0, 1, 2, 3, 4, 6, 7]
    assert journal.states[5] is RowState.FAILED
    assert journal.errors[5].type == "bad_request"
    assert (eng.stats.done, eng.stats.failed) == (7, 1)


def test_a_retryable_error_sends_the_whole_pack_again() -> None:
    calls = {"n": 0}

    def flaky(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ServerError("HTTP 500: try again", status=500)
        return answer(lease, body)

    outcome, transport, journal, eng = run(specs(4), flaky, max_inputs=4)
    assert outcome == EngineOutcome("completed")
    assert sizes(transport) == [4, 4]
    assert [e.verb for e in journal.events if e.index == 2] == ["sent", "retry", "sent", "done"]
    assert len(journal.answers) == 4
    assert eng.stats.retries == 1 and eng.stats.done == 4


def test_a_pack_out_of_retries_fails_every_row() -> None:
    def down(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        raise ServerError("HTTP 503: down", status=503)

    _, transport, journal, eng = run(specs(3), down, max_inputs=4)
    assert sizes(transport) == [3, 3, 3]  # max_attempts=3, one budget for the pack
    assert all(journal.states[i] is RowState.FAILED for i in range(3))
    assert eng.stats.failed == 3


def test_an_answer_missing_an_index_is_malformed_and_retried() -> None:
    calls = {"n": 0}

    def short(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        full = answer(lease, body)
        if calls["n"] == 1:
            full["data"] = full["data"][1:]
        return full

    _, transport, journal, eng = run(specs(3), short, max_inputs=4)
    assert sizes(transport) == [3, 3]
    assert len(journal.answers) == 3 and eng.stats.errors["malformed"] == 1


def test_a_pack_books_one_lease_for_the_tokens_of_all_its_rows() -> None:
    leases: list[Lease] = []

    def record(lease: Lease, body: dict[str, Any]) -> dict[str, Any]:
        leases.append(lease)
        return answer(lease, body)

    run(specs(5, tokens=7), record, max_inputs=5)
    assert len(leases) == 1 and leases[0].tokens >= 35
