"""The whole engine over real HTTP against the simulator: pooling, faults, limits, stopping.

Each test runs `squall.arun` on a small input against a `Simulator` on 127.0.0.1 and checks
what the run reports, what the journal and output hold, and what the simulator's ledger says
was really sent. Keys are fast and inputs small, so each test takes a second or so; nothing
asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from squall.api import RunResult, arun
from squall.config import EndpointConfig, RetryConfig, RunConfig
from squall.engine import Engine
from squall.errors import JournalError
from squall.journal import Journal
from squall.pool import KeyState
from squall.redact import mask_key
from squall.simulator import (
    LedgerEntry,
    SimConfig,
    SimKey,
    Simulator,
    expected_answer,
    prompt_digest,
)

Factory = Callable[..., Simulator]

FAST_RETRY = RetryConfig(backoff_base_s=0.02, backoff_max_s=0.1)


def key(name: str) -> str:
    """A key whose masked form (`sk-...` and its last four) differs for every name."""
    return f"sk-engine-{name}-{'x' * 12}{prompt_digest(name)[:4]}"


def prompts(n: int, start: int = 0) -> list[str]:
    return [f"what is {i} + {i * 7 % 13}?" for i in range(start, start + n)]


def endpoint(name: str, base_url: str, *keys: str | dict[str, Any], **kw: Any) -> EndpointConfig:
    return EndpointConfig(name=name, base_url=base_url, keys=keys, **kw)  # type: ignore[arg-type]


def config(*endpoints: EndpointConfig, **kw: Any) -> RunConfig:
    kw.setdefault("retry", FAST_RETRY)
    return RunConfig(model="sim-model", endpoints=endpoints, **kw)


async def run(
    tmp_path: Path,
    data: Any,
    cfg: RunConfig,
    *,
    notices: list[str] | None = None,
    on_engine: Callable[[Engine], None] | None = None,
) -> RunResult:
    """Run `data` with the journal and a JSONL output under `tmp_path`."""

    def hook(engine: Engine) -> None:
        if notices is not None:
            engines.append(engine)
        if on_engine is not None:
            on_engine(engine)

    engines: list[Engine] = []
    try:
        return await arun(
            data,
            config=cfg,
            output=tmp_path / "out.jsonl",
            journal=tmp_path / "journal.sqlite",
            progress="off",
            on_engine=hook,
        )
    finally:
        if notices is not None:
            for e in engines:
                notices.extend(e.stats.notices)


def output(tmp_path: Path) -> list[dict[str, Any]]:
    with (tmp_path / "out.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def assert_answers_belong_to_their_prompts(rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        assert row["error"] is None, row
        assert row["response"] == expected_answer(row["prompt"]), row


def by_key(ledger: list[LedgerEntry], *, status: int | None = None) -> Counter[str]:
    return Counter(e.key for e in ledger if status is None or e.status == status)


def served_per_prompt(ledger: list[LedgerEntry]) -> Counter[str]:
    return Counter(e.prompt_sha256 for e in ledger if e.served)


# -- throughput within limits -------------------------------------------------------------------


async def test_uneven_keys_share_the_work_in_proportion_to_their_limits(
    simulator: Factory, tmp_path: Path
) -> None:
    limits = {key("fast"): 4800, key("mid"): 2400, key("slow"): 1200}  # 80, 40, 20 a second
    sim = simulator(SimConfig(keys=tuple(SimKey(key=k, rpm=r) for k, r in limits.items())))
    cfg = config(
        endpoint("relay", sim.base_url, *({"key": k, "rpm": r} for k, r in limits.items()))
    )
    data = [{"prompt": p} for p in prompts(280)]
    res = await run(tmp_path, data, cfg)
    assert res.summary.status == "completed" and res.summary.done == 280
    rows = output(tmp_path)
    assert [r["prompt"] for r in rows] == [d["prompt"] for d in data]  # input order
    assert_answers_belong_to_their_prompts(rows)
    ledger = sim.ledger()
    served = by_key([e for e in ledger if e.served])
    total = sum(limits.values())
    for k, rpm in limits.items():
        share = served[mask_key(k)] / 280
        assert share == pytest.approx(rpm / total, abs=0.08), (mask_key(k), share)
    assert len(ledger) - sum(served.values()) <= 0.02 * len(ledger)  # (almost) no 429s
    assert max(served_per_prompt(ledger).values()) == 1


async def test_undeclared_limits_are_discovered_with_few_429s(
    simulator: Factory, tmp_path: Path
) -> None:
    k = key("hidden")
    sim = simulator(SimConfig(keys=(SimKey(key=k, rpm=1200),)))  # enforced, never declared
    res = await run(tmp_path, prompts(60), config(endpoint("relay", sim.base_url, k)))
    assert res.summary.status == "completed" and res.summary.done == 60
    ledger = sim.ledger()
    refused = sum(1 for e in ledger if e.status == 429)
    assert refused <= 0.1 * len(ledger)
    (stats,) = res.summary.keys
    assert stats.discovering and stats.rpm is not None and stats.rpm > 600  # it grew
    assert_answers_belong_to_their_prompts(output(tmp_path))


async def test_rate_limit_headers_are_followed_when_the_limit_drops_mid_run(
    simulator: Factory, tmp_path: Path
) -> None:
    k = key("shrinking")
    sim = simulator(SimConfig(keys=(SimKey(key=k, rpm=6000),), send_ratelimit_headers=True))

    async def lower_the_limit() -> None:
        for _ in range(2000):  # bounded: about 20 s at most
            if sim.served_count() >= 40:
                sim.set_key_limits(k, rpm=1200)
                return
            await asyncio.sleep(0.01)

    lowering = asyncio.ensure_future(lower_the_limit())
    res = await run(tmp_path, prompts(64), config(endpoint("relay", sim.base_url, k)))
    await lowering
    assert res.summary.done == 64
    (stats,) = res.summary.keys
    assert stats.rpm is not None and stats.rpm <= 1200  # the header's new limit, followed
    assert not stats.discovering
    refused = [e for e in sim.ledger() if e.status == 429]
    assert len(refused) <= 3


async def test_a_429_retry_after_is_honoured_on_that_key(
    simulator: Factory, tmp_path: Path
) -> None:
    k = key("tiny")
    # The provider allows one request a second; squall was told ten times that, so it meets
    # 429s and must wait each Retry-After out (whole seconds, rounded up).
    sim = simulator(SimConfig(keys=(SimKey(key=k, rpm=60),), retry_after="seconds"))
    cfg = config(endpoint("relay", sim.base_url, {"key": k, "rpm": 600}))
    res = await run(tmp_path, prompts(3), cfg)
    assert res.summary.done == 3
    ledger = sorted(sim.ledger(), key=lambda e: e.t)
    refusals = [i for i, e in enumerate(ledger) if e.status == 429]
    assert refusals, "the test needs at least one 429"
    for i in refusals:
        nxt = ledger[i + 1 :]
        if nxt:
            # Retry-After was at least 1 s: nothing on that key before it passed.
            assert nxt[0].t >= ledger[i].t + 1.0 - 0.005


@pytest.mark.parametrize("wording", ["concurrency", "rate"])
async def test_a_key_capped_at_four_in_flight_is_found_out_not_stalled(
    simulator: Factory, tmp_path: Path, wording: str
) -> None:
    # A relay lets this key have 4 requests in flight and refuses the rest with 429 +
    # Retry-After 1 s, worded as a concurrency cap or like a rate limit. The user declared no
    # rate limit (rpm = inf) and no concurrency. Cooling the key for each refusal would send
    # 64, have 60 refused and rest a second, over and over: some 15 refusals a row.
    k = key(f"capped-{wording}")
    sim = simulator(
        SimConfig(
            keys=(SimKey(key=k, max_concurrency=4),),
            latency_s=0.02,
            busy_wording=wording,  # type: ignore[arg-type]
        )
    )
    notices: list[str] = []
    res = await run(
        tmp_path,
        prompts(200),
        config(endpoint("relay", sim.base_url, k, rpm=math.inf)),
        notices=notices,
    )
    assert res.summary.status == "completed" and res.summary.done == 200
    assert_answers_belong_to_their_prompts(output(tmp_path))
    ledger = sim.ledger()
    refused = [e for e in ledger if e.status == 429]
    assert all(e.fault == "concurrency" for e in refused)
    # One round of refusals at the start (60 of the first 64), perhaps a few more while the
    # window settles, then a probe one wider every ten seconds.
    assert len(refused) <= 80, len(refused)
    (stats,) = res.summary.keys
    assert stats.window == 4
    assert any("refuses more than 4 request(s) at once" in n for n in notices), notices
    assert max(served_per_prompt(ledger).values()) == 1


async def test_a_worded_concurrency_refusal_narrows_a_paced_key_too(
    simulator: Factory, tmp_path: Path
) -> None:
    # A declared rate the relay accepts, and a concurrency cap it says in words: the pace stays,
    # the window narrows, and the key is not cooled a second for each refusal.
    k = key("capped-paced")
    sim = simulator(SimConfig(keys=(SimKey(key=k, max_concurrency=2),), latency_s=0.05))
    cfg = config(endpoint("relay", sim.base_url, {"key": k, "rpm": 6000}))
    res = await run(tmp_path, prompts(120), cfg)
    assert res.summary.done == 120
    (stats,) = res.summary.keys
    assert stats.window == 2
    assert stats.rpm == pytest.approx(6000)  # the pace was not taken for the culprit
    refused = [e for e in sim.ledger() if e.status == 429]
    assert len(refused) <= 0.25 * 120, len(refused)


# -- dead keys, down endpoints, paused servers --------------------------------------------------


async def test_a_dead_key_leaves_the_pool_and_the_others_finish_the_run(
    simulator: Factory, tmp_path: Path
) -> None:
    good1, dead, good2 = key("good1"), key("dead"), key("good2")
    sim = simulator(
        SimConfig(keys=(SimKey(key=good1), SimKey(key=dead, dead=True), SimKey(key=good2)))
    )
    notices: list[str] = []
    cfg = config(endpoint("relay", sim.base_url, good1, dead, good2, rpm=math.inf))
    res = await run(tmp_path, prompts(60), cfg, notices=notices)
    assert res.summary.status == "completed" and res.summary.done == 60
    assert res.exit_code == 0
    assert_answers_belong_to_their_prompts(output(tmp_path))
    states = {s.masked_key: s.state for s in res.summary.keys}
    assert states[mask_key(dead)] is KeyState.DEAD
    assert states[mask_key(good1)] is KeyState.ACTIVE
    assert [n for n in notices if mask_key(dead) in n and "401" in n]
    assert not any(dead in n for n in notices)
    served = by_key([e for e in sim.ledger() if e.served])
    assert mask_key(dead) not in served
    assert served[mask_key(good1)] + served[mask_key(good2)] == 60


async def test_no_usable_key_stops_cleanly_and_a_rerun_with_a_good_key_resumes(
    simulator: Factory, tmp_path: Path
) -> None:
    dead1, dead2, fresh = key("dead1"), key("dead2"), key("fresh")
    sim = simulator(
        SimConfig(
            keys=(
                SimKey(key=dead1, dead=True),
                SimKey(key=dead2, forbidden=True),
                SimKey(key=fresh),
            )
        )
    )
    data = prompts(40)
    first = await run(
        tmp_path, data, config(endpoint("relay", sim.base_url, dead1, dead2, rpm=math.inf))
    )
    assert first.summary.status == "stopped"
    assert first.summary.reason is not None and "no usable key" in first.summary.reason
    assert first.summary.done == 0 and first.summary.failed == 0
    assert first.summary.pending == 40
    assert first.exit_code == 1
    rows = output(tmp_path)
    assert len(rows) == 40 and all(r["response"] is None for r in rows)

    second = await run(tmp_path, data, config(endpoint("relay", sim.base_url, fresh, rpm=math.inf)))
    assert second.summary.status == "completed" and second.summary.done == 40
    assert_answers_belong_to_their_prompts(output(tmp_path))
    assert max(served_per_prompt(sim.ledger()).values()) == 1


async def test_a_down_endpoint_beside_a_good_one_does_not_stop_the_run(
    simulator: Factory, tmp_path: Path, free_port: int
) -> None:
    sim = simulator()
    notices: list[str] = []
    cfg = config(
        endpoint("down", f"http://127.0.0.1:{free_port}/v1", key("a"), rpm=math.inf),
        endpoint("up", sim.base_url, key("b"), rpm=math.inf),
        # One try per fault: a refused connection must not spend it (the row is not at fault).
        retry=RetryConfig(max_attempts=1, backoff_base_s=0.01, backoff_max_s=0.01),
    )
    res = await run(tmp_path, prompts(80), cfg, notices=notices)
    assert res.summary.status == "completed" and res.summary.done == 80
    rows = output(tmp_path)
    assert_answers_belong_to_their_prompts(rows)
    assert {r["endpoint"] for r in rows} == {"up"}
    assert any("down" in n and "refuses connections" in n for n in notices)
    (down,) = [k for k in res.summary.keys if k.endpoint == "down"]
    assert down.ok == 0 and 1 <= down.errors <= 64  # one outage burst, then a probe at most


async def test_a_request_that_hangs_times_out_and_is_tried_again(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(SimConfig(p_hang=0.1, hang_s=5.0, seed=3))
    cfg = config(endpoint("slow", sim.base_url, key("h"), rpm=math.inf, timeout_s=0.3))
    engines: list[Engine] = []
    res = await run(tmp_path, prompts(40), cfg, on_engine=engines.append)
    assert res.summary.done == 40
    assert engines[0].stats.errors["timeout"] > 0  # (a hung request never reaches the ledger)
    assert_answers_belong_to_their_prompts(output(tmp_path))


async def test_a_paused_server_is_waited_for_and_every_row_completes(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(SimConfig(latency_s=0.01))
    cfg = config(endpoint("only", sim.base_url, key("p"), rpm=math.inf, max_concurrency=4))

    async def pause_then_resume() -> None:
        for _ in range(2000):
            if sim.served_count() >= 30:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(sim.pause)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(sim.resume)

    outage = asyncio.ensure_future(pause_then_resume())
    res = await run(tmp_path, prompts(150), cfg)
    await outage
    assert res.summary.status == "completed" and res.summary.done == 150
    assert res.summary.retries > 0  # something really was refused or cut
    assert_answers_belong_to_their_prompts(output(tmp_path))


# -- faults and error shapes --------------------------------------------------------------------


async def test_a_few_percent_of_faults_lose_no_row(simulator: Factory, tmp_path: Path) -> None:
    sim = simulator(
        SimConfig(
            p_500=0.03,
            p_503=0.03,
            p_reset=0.03,
            p_malformed=0.03,
            p_429=0.02,
            retry_after="ms",
            busy_retry_after_s=0.05,
            seed=11,
        )
    )
    res = await run(
        tmp_path,
        prompts(300),
        config(
            endpoint("flaky", sim.base_url, key("f"), rpm=math.inf),
            # The default budget of tries, with shorter waits between them.
            retry=RetryConfig(backoff_base_s=0.05, backoff_max_s=0.5),
        ),
    )
    assert res.summary.status == "completed" and res.summary.done == 300
    assert res.summary.retries > 0
    rows = output(tmp_path)
    assert_answers_belong_to_their_prompts(rows)
    assert max(r["attempts"] for r in rows) > 1
    faults = Counter(e.fault for e in sim.ledger())
    assert {"500", "503", "reset", "malformed"} <= set(faults)


async def test_server_errors_of_every_shape_are_recorded_as_readable_reasons(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(SimConfig(p_500=0.5, p_503=0.5, error_shape="rotate"))
    cfg = config(
        endpoint("broken", sim.base_url, key("e"), rpm=math.inf, max_concurrency=1),
        retry=RetryConfig(max_attempts=1, backoff_base_s=0.01, backoff_max_s=0.01),
    )
    res = await run(tmp_path, prompts(10), cfg)
    assert res.summary.failed == 10 and res.summary.done == 0
    assert res.exit_code == 1
    errors = [r["error"] for r in output(tmp_path)]
    assert all(e["type"] == "server_error" and e["status"] in (500, 503) for e in errors)
    messages = {e["message"] for e in errors}
    for m in messages:
        reason = m.split(": ", 1)[1]
        assert reason and "<" not in reason and "{" not in reason and len(reason) < 120
    # One connection, answered in turn: the five shapes each came back twice.
    assert len(messages) >= 5
    assert any("Service Unavailable" in m for m in messages)
    assert any("Internal Server Error" in m for m in messages)


async def test_content_filter_and_bad_request_rows_are_recorded_not_retried(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator()
    data = prompts(30)
    data[3] = "SQUALL_CONTENT_FILTER: something nasty"
    data[17] = "SQUALL_BAD_REQUEST: something malformed"
    res = await run(tmp_path, data, config(endpoint("relay", sim.base_url, key("c"), rpm=math.inf)))
    assert res.summary.status == "completed"
    assert res.summary.done == 28 and res.summary.failed == 2
    assert res.exit_code == 1
    reasons = {f.reason: f.example_rows for f in res.summary.failures}
    assert len(reasons) == 2
    rows = output(tmp_path)
    assert rows[3]["error"]["type"] == "content_filter"
    assert "content management policy" in rows[3]["error"]["message"]
    assert rows[17]["error"]["type"] == "bad_request"
    assert rows[17]["error"]["status"] == 400
    assert rows[3]["attempts"] == rows[17]["attempts"] == 1
    assert_answers_belong_to_their_prompts(r for i, r in enumerate(rows) if i not in (3, 17))
    sent = Counter(e.prompt_sha256 for e in sim.ledger())
    assert sent[prompt_digest(data[3])] == sent[prompt_digest(data[17])] == 1


async def test_a_key_echoed_in_an_error_body_never_reaches_journal_or_output(
    simulator: Factory, tmp_path: Path
) -> None:
    leaky, broke, good = key("leaky"), key("broke"), key("good")
    sim = simulator(
        SimConfig(
            keys=(
                SimKey(key=leaky, dead=True),
                SimKey(key=broke, forbidden=True),
                SimKey(key=good),
            ),
            echo_key_in_errors=True,  # the 401/403 messages hold the whole key
        )
    )
    secrets = [s.encode() for s in (leaky, broke, good)]

    def assert_no_secret_written() -> None:
        written = [p for p in sorted(tmp_path.glob("*")) if p.is_file()]
        assert any(p.name == "journal.sqlite" for p in written)
        for path in written:
            blob = path.read_bytes()
            assert not any(s in blob for s in secrets), path

    # Only the bad keys first: the run stops, and each row keeps the 401/403 as its last error.
    notices: list[str] = []
    bad = config(endpoint("relay", sim.base_url, leaky, broke, rpm=math.inf))
    first = await run(tmp_path, prompts(20), bad, notices=notices)
    assert first.summary.status == "stopped"
    rows = output(tmp_path)
    errors = [r["error"]["message"] for r in rows if r["error"]]
    assert errors and any(mask_key(leaky) in m or mask_key(broke) in m for m in errors)
    assert_no_secret_written()
    # Then a good key beside them finishes the run.
    both = config(endpoint("relay", sim.base_url, leaky, broke, good, rpm=math.inf))
    second = await run(tmp_path, prompts(20), both, notices=notices)
    assert second.summary.done == 20
    assert_no_secret_written()
    shown = "\n".join([*notices, str(first.summary), str(second.summary), repr(second)])
    assert not any(s.decode() in shown for s in secrets)
    assert mask_key(leaky) in shown and mask_key(broke) in shown


# -- stopping and resuming ----------------------------------------------------------------------


async def test_an_interrupted_run_keeps_its_answers_and_a_rerun_sends_only_the_rest(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(SimConfig(latency_s=0.01))
    cfg = config(endpoint("relay", sim.base_url, key("i"), rpm=math.inf, max_concurrency=4))
    data = prompts(200)

    def stop_soon(engine: Engine) -> None:
        async def watch() -> None:
            for _ in range(2000):
                if sim.served_count() >= 40:
                    engine.request_stop("interrupted")
                    return
                await asyncio.sleep(0.005)

        tasks.append(asyncio.ensure_future(watch()))

    tasks: list[asyncio.Task[None]] = []
    first = await run(tmp_path, data, cfg, on_engine=stop_soon)
    await asyncio.gather(*tasks)
    assert first.summary.status == "interrupted"
    assert first.exit_code == 130
    assert 40 <= first.summary.done < 200
    assert first.summary.done + first.summary.pending == 200
    served_first = sim.served_count()
    assert served_first == first.summary.done  # every answer that arrived was journaled

    second = await run(tmp_path, data, cfg)
    assert second.summary.status == "completed" and second.summary.done == 200
    assert sim.served_count() == 200  # nothing journaled was requested again
    assert max(served_per_prompt(sim.ledger()).values()) == 1
    assert_answers_belong_to_their_prompts(output(tmp_path))


async def test_a_journal_that_cannot_commit_stops_the_run_and_keeps_what_it_committed(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(SimConfig(latency_s=0.005))
    cfg = config(endpoint("relay", sim.base_url, key("j"), rpm=math.inf, max_concurrency=4))

    class DiskFills:
        """The run's own journal, until its 10th commit fails as a full disk would."""

        def __init__(self, journal: Any) -> None:
            self.journal = journal
            self.commits = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self.journal, name)

        def commit(self) -> None:
            self.commits += 1
            if self.commits == 10:
                raise JournalError("cannot commit the latest answers: the disk is full")
            self.journal.commit()

    def fill_the_disk(engine: Engine) -> None:
        # The engine is given its journal port; the port commits the run's Journal file.
        port = engine._journal
        port._journal = DiskFills(port._journal)  # type: ignore[attr-defined]  # LocalJournal

    with pytest.raises(JournalError, match="disk is full"):
        await run(tmp_path, prompts(400), cfg, on_engine=fill_the_disk)
    served = sim.served_count()
    assert served < 400  # it stopped sending
    with Journal.open(tmp_path / "journal.sqlite", read_only=True) as jr:
        kept = jr.statistics().done
    assert 0 < kept <= served
    # What was committed is kept, and a rerun sends only the rest.
    again = await run(tmp_path, prompts(400), cfg)
    assert again.summary.done == 400
    assert sim.served_count() - served == 400 - kept
    assert_answers_belong_to_their_prompts(output(tmp_path))
