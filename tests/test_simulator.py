"""The provider simulator, tested over real HTTP on 127.0.0.1 with aiohttp's client."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from squall.errors import ConfigError, ServeError
from squall.redact import mask_key
from squall.simulator import (
    SimConfig,
    SimKey,
    Simulator,
    demo_config,
    expected_answer,
    format_duration,
    load_config,
    prompt_digest,
)
from squall.testing import (
    FakeClock,
    read_ledger_file,
    start_simulator_process,
    stop_process,
)

KEY = "sk-test-aaaaaaaaaaaa1111"
KEY2 = "sk-test-bbbbbbbbbbbb2222"
Factory = Callable[..., Simulator]


class Reply:
    """What one request got back."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def ask(
    session: aiohttp.ClientSession,
    sim: Simulator | str,
    prompt: str = "hello",
    *,
    key: str | None = KEY,
    model: str = "sim-model",
    timeout: float = 10.0,
    **extra: Any,
) -> Reply:
    base = sim if isinstance(sim, str) else sim.base_url
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
    async with session.post(
        base + "/chat/completions",
        json=body,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as r:
        return Reply(r.status, dict(r.headers), await r.text())


def keyed(**kw: Any) -> SimConfig:
    """A config with KEY (and KEY2 unlimited), plus `kw`."""
    limits = {k: kw.pop(k) for k in ("rpm", "tpm", "max_concurrency") if k in kw}
    return SimConfig(keys=(SimKey(key=KEY, **limits), SimKey(key=KEY2)), **kw)


async def wait_until(cond: Callable[[], bool], tries: int = 500) -> None:
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


# ------------------------------------------------------------------------------------------
# Answers


def test_expected_answer_evaluates_arithmetic_with_precedence() -> None:
    assert expected_answer("What is 12 + 7 x 3? Answer with the number.") == "33"
    assert expected_answer("2*3*4") == "24"
    assert expected_answer("compute 10 - 4 - 3 + 2 x 5 - 1") == "12"
    assert expected_answer("0 x 99") == "0"


def test_expected_answer_echoes_a_hash_otherwise() -> None:
    digest = prompt_digest("tell me a story")
    assert expected_answer("tell me a story") == "echo:" + digest[:16]
    assert len(digest) == 64


def test_format_duration_writes_openai_style() -> None:
    assert format_duration(0.02) == "20ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3723.25) == "1h2m3.25s"
    assert format_duration(0) == "0s"


async def test_answer_is_a_complete_chat_completion(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed())
    reply = await ask(session, sim, "what is 6 x 7", model="any-model")
    assert reply.status == 200
    data = reply.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "any-model"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "42"}
    assert choice["finish_reason"] == "stop"
    usage = data["usage"]
    assert usage["prompt_tokens"] == math.ceil(len("what is 6 x 7") / 4) + 4
    assert usage["completion_tokens"] == 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + 1


async def test_last_user_message_is_the_prompt(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed())
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "1 + 1"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": [{"type": "text", "text": "say hi"}]},
        ],
    }
    async with session.post(
        sim.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        data = await r.json()
    assert data["choices"][0]["message"]["content"] == expected_answer("say hi")
    assert sim.ledger()[0].prompt_sha256 == prompt_digest("say hi")


async def test_small_max_tokens_truncates_with_finish_reason_length(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed())
    reply = await ask(session, sim, "no numbers here", max_tokens=2)
    data = reply.json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["choices"][0]["message"]["content"] == expected_answer("no numbers here")[:8]
    assert data["usage"]["completion_tokens"] == 2


# ------------------------------------------------------------------------------------------
# Limits


async def test_600_rpm_key_refuses_the_11th_request_in_the_same_instant(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(keyed(rpm=600), clock=clock)
    statuses = [(await ask(session, sim, f"q{i}")).status for i in range(11)]
    assert statuses == [200] * 10 + [429]
    refused = await ask(session, sim, "again")
    assert refused.json() == {
        "error": {
            "message": refused.json()["error"]["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert refused.headers["Retry-After"] == "1"
    clock.advance(0.1)  # one request's worth of refill
    assert (await ask(session, sim, "after refill")).status == 200
    assert (await ask(session, sim, "too soon")).status == 429
    # Refused requests cost nothing: KEY2 and the served count are untouched by them.
    assert (await ask(session, sim, "other key", key=KEY2)).status == 200
    assert sim.served_count() == 12


async def test_600_rpm_key_on_the_real_clock_serves_about_its_rate(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(rpm=600))
    start = time.monotonic()
    replies = await asyncio.gather(*(ask(session, sim, f"q{i}") for i in range(30)))
    elapsed = time.monotonic() - start
    served = sum(r.status == 200 for r in replies)
    # A full bucket of 10, plus what refilled (10/s) while the burst was being answered.
    assert 10 <= served <= 10 + math.ceil(elapsed * 10)
    assert {r.status for r in replies} <= {200, 429}


@pytest.mark.parametrize("style", ["seconds", "ms", "date", "none"])
async def test_retry_after_styles(
    simulator: Factory, session: aiohttp.ClientSession, style: str
) -> None:
    clock = FakeClock()
    sim = simulator(keyed(rpm=60, retry_after=style), clock=clock)  # 1/s, bucket of 1
    assert (await ask(session, sim, "a")).status == 200
    clock.advance(0.25)
    refused = await ask(session, sim, "b")
    assert refused.status == 429
    headers = {k.lower(): v for k, v in refused.headers.items()}
    if style == "none":
        assert "retry-after" not in headers
        return
    if style == "date":
        when = parsedate_to_datetime(headers["retry-after"]).timestamp()
        assert time.time() - 1 <= when <= time.time() + 3
        return
    assert headers["retry-after"] == "1"
    if style == "ms":
        assert headers["retry-after-ms"] == "750"
    else:
        assert "retry-after-ms" not in headers


async def test_ratelimit_headers_follow_limits_changed_mid_run(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(keyed(rpm=600, tpm=60_000, send_ratelimit_headers=True), clock=clock)
    first = await ask(session, sim, "x" * 40)  # 14 prompt tokens + 6 completion = 20
    h = {k.lower(): v for k, v in first.headers.items()}
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-remaining-requests"] == "540"
    assert h["x-ratelimit-reset-requests"] == "100ms"
    assert h["x-ratelimit-limit-tokens"] == "60000"
    assert h["x-ratelimit-remaining-tokens"] == str(60_000 - 20 * 60)
    assert h["x-ratelimit-reset-tokens"] == "20ms"

    sim.set_key_limits(KEY, rpm=120)  # capacity 2: what was spent (1 of 10) leaves 2 left
    second = await ask(session, sim, "y")
    h = {k.lower(): v for k, v in second.headers.items()}
    assert h["x-ratelimit-limit-requests"] == "120"
    assert h["x-ratelimit-remaining-requests"] == "60"
    third = await ask(session, sim, "z")
    assert third.status == 200
    refused = await ask(session, sim, "w")
    assert refused.status == 429
    h = {k.lower(): v for k, v in refused.headers.items()}
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == "1s"

    sim.set_key_limits(KEY, rpm=None, tpm=None)
    lifted = await ask(session, sim, "v")
    assert lifted.status == 200
    assert not any(k.lower().startswith("x-ratelimit") for k in lifted.headers)


async def test_tpm_refuses_with_type_tokens(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(keyed(tpm=600), clock=clock)  # 10 tokens a second, bucket of 10
    # Larger than the bucket: passes on a full bucket, then leaves it in debt.
    assert (await ask(session, sim, "x" * 100, max_tokens=5)).status == 200
    refused = await ask(session, sim, "y")
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    clock.advance(10)
    assert (await ask(session, sim, "y")).status == 200


@pytest.mark.parametrize("wording", ["concurrency", "rate"])
async def test_max_concurrency_refuses_the_request_over_it(
    simulator: Factory, session: aiohttp.ClientSession, wording: str
) -> None:
    sim = simulator(keyed(max_concurrency=2, latency_s=0.5, busy_wording=wording))
    first = asyncio.gather(*(ask(session, sim, f"q{i}") for i in range(2)))
    await wait_until(lambda: sim.in_flight() == 2)
    over = await ask(session, sim, "third")
    assert over.status == 429
    error = over.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    if wording == "concurrency":
        assert error["message"].startswith("Too many concurrent requests")
        assert "at most 2 at once" in error["message"]
    else:  # as many relays word it: nothing says it was about requests in flight
        assert error["message"].startswith("Rate limit reached for requests")
        assert "concurren" not in json.dumps(error)
    assert [r.status for r in await first] == [200, 200]
    assert [e.fault for e in sim.ledger() if e.status == 429] == ["concurrency"]


# ------------------------------------------------------------------------------------------
# Keys, models, bad requests


async def test_unknown_dead_and_forbidden_keys(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    dead, broke = "sk-dead-cccccccccccc3333", "sk-poor-dddddddddddd4444"
    sim = simulator(
        SimConfig(keys=(SimKey(key=dead, dead=True), SimKey(key=broke, forbidden=True)))
    )
    unknown = await ask(session, sim, key="sk-nope-eeeeeeeeeeee5555")
    assert unknown.status == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key"
    assert "sk-nope-eeeeeeeeeeee5555" not in unknown.text
    assert (await ask(session, sim, key=None)).status == 401
    assert (await ask(session, sim, key=dead)).status == 401
    forbidden = await ask(session, sim, key=broke)
    assert forbidden.status == 403
    assert forbidden.json()["error"]["code"] == "insufficient_quota"
    assert [e.status for e in sim.ledger()] == [401, 401, 401, 403]
    assert sim.served_count() == 0


async def test_echo_key_in_errors_puts_the_real_key_in_the_body(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, dead=True),), echo_key_in_errors=True))
    assert KEY in (await ask(session, sim)).text
    assert KEY not in json.dumps([e._asdict() for e in sim.ledger()])


async def test_models_list_and_strict_models(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(models=("alpha", "beta"), strict_models=True))
    async with session.get(
        sim.base_url + "/models", headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert [m["id"] for m in (await r.json())["data"]] == ["alpha", "beta"]
    async with session.get(sim.base_url + "/models") as r:
        assert r.status == 401
    assert (await ask(session, sim, model="beta")).status == 200
    missing = await ask(session, sim, model="gamma")
    assert missing.status == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_any_model_is_answered_unless_strict(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(models=("alpha",)))
    assert (await ask(session, sim, model="whatever")).status == 200


async def test_without_keys_every_key_is_accepted(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(SimConfig())
    assert (await ask(session, sim, key="EMPTY")).status == 200
    assert (await ask(session, sim, key=None)).status == 200


async def test_content_triggers(simulator: Factory, session: aiohttp.ClientSession) -> None:
    sim = simulator(keyed())
    bad = await ask(session, sim, "please SQUALL_BAD_REQUEST now")
    assert bad.status == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    filtered = await ask(session, sim, "SQUALL_CONTENT_FILTER")
    assert filtered.status == 400
    assert filtered.json()["error"]["code"] == "content_filter"
    assert [e.fault for e in sim.ledger()] == ["bad_request", "content_filter"]


async def test_squall_slow_keeps_a_request_in_flight(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(slow_s=30))
    slow = asyncio.ensure_future(ask(session, sim, "SQUALL_SLOW please"))
    try:
        await wait_until(lambda: sim.in_flight() == 1)
        assert (await ask(session, sim, "quick")).status == 200
        assert not slow.done()
        assert sim.in_flight() == 1
    finally:
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow


@pytest.mark.parametrize(
    "extra",
    [
        {"max_tokens": 0},
        {"max_tokens": "5"},
        {"stream": True},
        {"messages": []},
        {"messages": [{"role": "system", "content": "no user"}]},
        {"model": ""},
    ],
)
async def test_invalid_bodies_get_400(
    simulator: Factory, session: aiohttp.ClientSession, extra: dict[str, Any]
) -> None:
    sim = simulator(keyed())
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    async with session.post(
        sim.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_non_json_body_gets_400(simulator: Factory, session: aiohttp.ClientSession) -> None:
    sim = simulator(keyed())
    async with session.post(
        sim.base_url + "/chat/completions",
        data=b"{not json",
        headers={"Authorization": f"Bearer {KEY}"},
    ) as r:
        assert r.status == 400


# ------------------------------------------------------------------------------------------
# Faults


async def test_500_error_shapes_rotate(simulator: Factory, session: aiohttp.ClientSession) -> None:
    sim = simulator(keyed(p_500=1.0))
    replies = [await ask(session, sim, f"q{i}") for i in range(5)]
    assert {r.status for r in replies} == {500}
    openai, string, detail, text, html = replies
    assert openai.json()["error"]["type"] == "server_error"
    assert string.json() == {"error": "Internal Server Error"}
    assert detail.json() == {"detail": "Internal Server Error"}
    assert text.headers["Content-Type"].startswith("text/plain")
    assert text.text == "Internal Server Error"
    assert html.headers["Content-Type"].startswith("text/html")
    assert "<title>500 Internal Server Error</title>" in html.text


@pytest.mark.parametrize("shape", ["openai", "string", "detail", "text", "html"])
async def test_503_with_a_fixed_error_shape(
    simulator: Factory, session: aiohttp.ClientSession, shape: str
) -> None:
    sim = simulator(keyed(p_503=1.0, error_shape=shape))
    replies = [await ask(session, sim, f"q{i}") for i in range(2)]
    assert [r.status for r in replies] == [503, 503]
    assert replies[0].text == replies[1].text


async def test_reset_cuts_the_connection_mid_answer(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(p_reset=1.0))
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        await ask(session, sim)
    (entry,) = sim.ledger()
    assert (entry.status, entry.served, entry.fault) == (200, False, "reset")
    assert sim.served_count() == 0


async def test_malformed_answers_rotate(simulator: Factory, session: aiohttp.ClientSession) -> None:
    sim = simulator(keyed(p_malformed=1.0))
    truncated, not_json, no_choices = [await ask(session, sim, f"q{i}") for i in range(3)]
    assert truncated.status == not_json.status == no_choices.status == 200
    for reply in (truncated, not_json):
        with pytest.raises(ValueError):
            json.loads(reply.text)
    assert "choices" not in no_choices.json()
    assert "usage" in no_choices.json()
    assert [e.served for e in sim.ledger()] == [False, False, False]


async def test_spontaneous_429(simulator: Factory, session: aiohttp.ClientSession) -> None:
    sim = simulator(keyed(p_429=1.0, retry_after="ms", busy_retry_after_s=2.5))
    reply = await ask(session, sim)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "3"
    assert reply.headers["retry-after-ms"] == "2500"


async def test_hang_trips_a_client_timeout_and_is_not_counted_served(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed(p_hang=1.0, hang_s=0.5))
    with pytest.raises(asyncio.TimeoutError):
        await ask(session, sim, timeout=0.1)
    await wait_until(lambda: len(sim.ledger()) == 1)
    (entry,) = sim.ledger()
    assert (entry.fault, entry.served) == ("hang", False)


async def test_faults_are_drawn_from_the_seeded_rng(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    runs = []
    for _ in range(2):
        sim = simulator(keyed(p_500=0.3, p_503=0.2, seed=7))
        runs.append([(await ask(session, sim, f"q{i}")).status for i in range(20)])
    assert runs[0] == runs[1]
    assert {200, 500, 503} <= set(runs[0])


# ------------------------------------------------------------------------------------------
# Ledger, lifecycle, process mode


async def test_ledger_records_masked_keys_models_and_outcomes(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed())
    await ask(session, sim, "first", model="m1")
    await ask(session, sim, "SQUALL_BAD_REQUEST", model="m2", key=KEY2)
    entries = sim.ledger()
    assert [(e.key, e.model, e.status, e.served) for e in entries] == [
        (mask_key(KEY), "m1", 200, True),
        (mask_key(KEY2), "m2", 400, False),
    ]
    assert entries[0].prompt_sha256 == prompt_digest("first")
    assert entries[0].t <= entries[1].t <= time.monotonic()
    assert sim.served_count() == 1
    async with session.get(sim.base_url.removesuffix("/v1") + "/_squall/ledger") as r:
        raw = await r.text()
    assert KEY not in raw and KEY2 not in raw
    data = json.loads(raw)
    assert data["served_count"] == 1
    assert data["entries"][0]["key"] == mask_key(KEY)
    entries.clear()  # ledger() hands out a copy
    assert len(sim.ledger()) == 2


async def test_pause_refuses_connections_then_resume_serves_again(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(keyed())
    assert (await ask(session, sim)).status == 200
    port = sim.port
    await asyncio.to_thread(sim.pause)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        with pytest.raises(aiohttp.ClientConnectorError):
            await ask(fresh, sim)
        await asyncio.to_thread(sim.resume)
        assert sim.port == port
        assert (await ask(fresh, sim)).status == 200


def test_repr_and_config_never_show_the_key() -> None:
    cfg = keyed(rpm=10)
    assert KEY not in repr(cfg) and KEY not in repr(cfg.keys[0])
    assert mask_key(KEY) in repr(cfg.keys[0])


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    cfg = keyed(rpm=10, p_500=0.1, retry_after="date", models=("a", "b"))
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path = tmp_path / "sim.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert load_config(str(path)) == cfg
    assert load_config(json.dumps({"keys": [KEY]})).keys == (SimKey(key=KEY),)
    assert demo_config().keys[0].rpm == 600


@pytest.mark.parametrize(
    "data",
    [
        {"p_500": 0.7, "p_503": 0.7},
        {"p_reset": 2.0},
        {"retry_after": "minutes"},
        {"surprise": 1},
        {"keys": [{"key": KEY, "rpm": 0}]},
        {"keys": [KEY, KEY]},
    ],
)
def test_bad_config_raises_config_error(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SimConfig.from_dict(data)


def test_base_url_before_start_says_to_start() -> None:
    with pytest.raises(ServeError, match="start"):
        _ = Simulator().base_url


async def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock.now() == 100.0
    await clock.sleep(2.5)
    await clock.sleep(-1)
    clock.advance(0.5)
    assert clock.now() == 103.0
    assert clock.sleeps == [2.5, -1]


async def test_process_mode_writes_a_ledger_file_that_survives_a_kill(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    ledger = tmp_path / "served.jsonl"
    proc, base_url = start_simulator_process(keyed(), ledger_file=ledger)
    try:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        assert [(await ask(session, base_url, f"{i} + 1")).text for i in range(3)] != []
        proc.kill()  # no clean shutdown: every line must already be on disk
        proc.wait(timeout=10)
    finally:
        stop_process(proc)
    entries = read_ledger_file(ledger)
    assert [e.prompt_sha256 for e in entries] == [prompt_digest(f"{i} + 1") for i in range(3)]
    assert all(e.served and e.key == mask_key(KEY) for e in entries)
    assert KEY not in ledger.read_text()


async def test_process_mode_stops_cleanly_on_sigterm(session: aiohttp.ClientSession) -> None:
    proc, base_url = start_simulator_process(keyed())
    try:
        reply = await ask(session, base_url, "2 + 2")
        assert reply.json()["choices"][0]["message"]["content"] == "4"
    finally:
        assert stop_process(proc) == 0


def test_a_busy_port_is_a_serve_error(simulator: Factory) -> None:
    sim = simulator(keyed())
    with pytest.raises(ServeError, match="cannot listen"):
        Simulator(keyed(), port=sim.port).start()
    with pytest.raises(ServeError, match="no URL"):
        start_simulator_process(keyed(), port=sim.port)


def test_a_free_port_can_be_chosen(simulator: Factory, free_port: int) -> None:
    sim = simulator(keyed(), port=free_port)
    assert sim.base_url == f"http://127.0.0.1:{free_port}/v1"
