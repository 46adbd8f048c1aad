"""Transport: every answer and every failure shape becomes a Completion or a typed, readable error.

Parsing helpers are tested on bytes; `Transport.send` is tested over real HTTP against the
simulator on 127.0.0.1 and against a port where nothing listens.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

import pytest

from squall.errors import (
    AuthError,
    BadRequest,
    ConnectionLost,
    ContentFiltered,
    MalformedResponse,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
)
from squall.operations import CHAT
from squall.operations.chat import ChatOperation
from squall.records import Completion
from squall.redact import Redactor, mask_key
from squall.simulator import SimConfig, SimKey, Simulator, expected_answer
from squall.transport import (
    Target,
    Transport,
    error_message,
    make_target,
    parse_rate_headers,
    retry_after_s,
)

KEY = "sk-transport-aaaaaaaa1111"
Factory = Callable[..., Simulator]


# -- error bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            b'{"error": {"message": "Rate limit reached", "type": "requests", '
            b'"code": "rate_limit_exceeded"}}',
            "Rate limit reached",
            "rate_limit_exceeded",
        ),
        (b'{"error": {"msg": "no message field", "type": "t"}}', "no message field", "t"),
        (b'{"error": "Internal Server Error"}', "Internal Server Error", None),
        (b'{"detail": "Not Found"}', "Not Found", None),
        (
            b'{"detail": [{"loc": ["body", "x"], "msg": "field required"}, '
            b'{"msg": "value is not an integer"}]}',
            "field required; value is not an integer",
            None,
        ),
        (b'{"message": "Too many requests"}', "Too many requests", None),
        (b"Internal Server Error", "Internal Server Error", None),
        (b"  upstream   timed\n out  ", "upstream timed out", None),
        (
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center>"
            b"<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
            "502 Bad Gateway",
            None,
        ),
        (
            b"<html><body><p>Service &amp; gateway down</p></body></html>",
            "Service & gateway down",
            None,
        ),
        (b"", "", None),
        (b'{"other": 1}', '{"other": 1}', None),
        (b'["a", "b"]', '["a", "b"]', None),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8", None),
    ],
)
def test_error_message_reads_every_body_shape(body: bytes, message: str, code: str | None) -> None:
    assert error_message(body) == (message, code)


def test_error_message_clips_long_bodies() -> None:
    msg, _ = error_message(b"x" * 5000)
    assert len(msg) == 300 and msg.endswith("...")


# -- headers ------------------------------------------------------------------------------------


def test_retry_after_reads_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after_s({"Retry-After": "3"}) == 3.0
    assert retry_after_s({"Retry-After": "1.5"}) == 1.5
    assert retry_after_s({"retry-after-ms": "250", "Retry-After": "1"}) == 0.25
    assert retry_after_s({"retry-after-ms": "junk", "Retry-After": "2"}) == 2.0
    now = 1_700_000_000.0
    date = formatdate(now + 30, usegmt=True)
    assert retry_after_s({"Retry-After": date}, now=now) == pytest.approx(30.0)
    past = formatdate(now - 30, usegmt=True)
    assert retry_after_s({"Retry-After": past}, now=now) == 0.0
    assert retry_after_s({"Retry-After": "-4"}) == 0.0
    assert retry_after_s({"Retry-After": formatdate(time.time() + 60, usegmt=True)}) == (
        pytest.approx(60, abs=2)
    )


@pytest.mark.parametrize("value", ["", "soon", "Someday, 99 Foo 20xx", "inf", "nan", "1e999"])
def test_retry_after_that_cannot_be_read_is_ignored(value: str) -> None:
    assert retry_after_s({"Retry-After": value}) is None
    assert retry_after_s({"retry-after-ms": value}) is None
    assert retry_after_s({}) is None


def test_rate_headers_are_read_as_numbers_and_durations() -> None:
    rate = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "199000",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert rate is not None
    assert rate.limit_requests == 500
    assert rate.remaining_requests == 499
    assert rate.reset_requests_s == pytest.approx(0.12)
    assert rate.limit_tokens == 200000
    assert rate.remaining_tokens == 199000
    assert rate.reset_tokens_s == 360.0
    assert parse_rate_headers({"content-type": "application/json"}) is None
    only_remaining = parse_rate_headers({"x-ratelimit-remaining-requests": "0"})
    assert only_remaining is not None and only_remaining.remaining_requests == 0


def test_rate_headers_that_cannot_be_read_are_left_out() -> None:
    rate = parse_rate_headers(
        {
            "x-ratelimit-limit-requests": "lots",
            "x-ratelimit-remaining-requests": "nan",
            "x-ratelimit-reset-requests": "1.2.3s",
            "x-ratelimit-limit-tokens": "-5",
            "x-ratelimit-remaining-tokens": "inf",
            "x-ratelimit-reset-tokens": "soon",
        }
    )
    assert rate is not None
    assert rate.limit_requests is None
    assert rate.remaining_requests is None
    assert rate.reset_requests_s is None
    assert rate.limit_tokens is None
    assert rate.remaining_tokens is None
    assert rate.reset_tokens_s is None


def test_a_target_carries_the_key_only_in_its_header() -> None:
    t = make_target("http://127.0.0.1:1/v1", KEY, timeout_s=5, extra_headers={"X-A": "b"})
    assert t.url == "http://127.0.0.1:1/v1/chat/completions"
    assert t.headers["Authorization"] == f"Bearer {KEY}"
    assert t.headers["X-A"] == "b"
    assert (
        "Authorization" not in make_target("http://h/v1", "", timeout_s=5, extra_headers={}).headers
    )


# -- over real HTTP -----------------------------------------------------------------------------


def body(prompt: str = "what is 2 + 3?", **extra: object) -> bytes:
    return json.dumps(
        {"model": "sim-model", "messages": [{"role": "user", "content": prompt}], **extra}
    ).encode()


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    async with Transport(max_connections=8, redactor=Redactor([KEY]), keep_raw=False) as t:
        yield t


def target(sim: Simulator | str, key: str = KEY, timeout_s: float = 10.0) -> Target:
    base = sim if isinstance(sim, str) else sim.base_url
    return make_target(base, key, timeout_s=timeout_s, extra_headers={})


async def failure(transport: Transport, t: Target, data: bytes | None = None) -> RequestError:
    with pytest.raises(RequestError) as info:
        await transport.post(t, data or body())
    return info.value


async def test_a_completion_is_parsed_with_usage_and_rate_headers(
    simulator: Factory, transport: Transport
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, rpm=600),), send_ratelimit_headers=True))
    completion, rate = await transport.post(target(sim), body("what is 2 + 3?"))
    assert completion.text == expected_answer("what is 2 + 3?") == "5"
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens and completion.completion_tokens == 1
    assert completion.request_id and completion.request_id.startswith("chatcmpl-")
    assert completion.raw is None
    assert rate is not None and rate.limit_requests == 600
    assert rate.remaining_requests is not None and rate.reset_requests_s is not None


async def test_the_raw_body_is_kept_when_asked(simulator: Factory) -> None:
    sim = simulator()
    async with Transport(max_connections=2, redactor=Redactor([]), keep_raw=True) as t:
        completion, rate = await t.post(target(sim), body())
    assert completion.raw is not None and json.loads(completion.raw)["choices"]
    assert rate is None


async def test_a_length_cut_answer_reports_its_finish_reason(
    simulator: Factory, transport: Transport
) -> None:
    sim = simulator()
    completion, _ = await transport.post(target(sim), body("tell me a long story", max_tokens=1))
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 1


async def test_dead_and_forbidden_keys_are_auth_errors_with_the_key_masked(
    simulator: Factory, transport: Transport
) -> None:
    dead, broke = "sk-transport-dead00002222", "sk-transport-broke0003333"
    sim = simulator(
        SimConfig(
            keys=(SimKey(key=dead, dead=True), SimKey(key=broke, forbidden=True)),
            echo_key_in_errors=True,
        )
    )
    async with Transport(max_connections=2, redactor=Redactor([dead, broke]), keep_raw=False) as t:
        e401 = await failure(t, target(sim, dead))
        e403 = await failure(t, target(sim, broke))
        unknown = await failure(t, target(sim, KEY))
    assert isinstance(e401, AuthError) and e401.status == 401
    assert isinstance(e403, AuthError) and e403.status == 403
    assert isinstance(unknown, AuthError)
    assert dead not in str(e401) and mask_key(dead) in str(e401)
    assert broke not in str(e403) and mask_key(broke) in e403.message
    assert "quota" in e403.message


@pytest.mark.parametrize("style", ["seconds", "ms", "date", "none"])
async def test_a_429_is_rate_limited_with_its_retry_after(
    simulator: Factory, transport: Transport, style: str
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, rpm=6),), retry_after=style))  # type: ignore[arg-type]
    await transport.post(target(sim), body())
    error = await failure(transport, target(sim))
    assert isinstance(error, RateLimited)
    assert error.status == 429
    assert "Rate limit" in error.message
    assert not error.concurrency  # a rate limit: pausing is the cure
    if style == "none":
        assert error.retry_after is None
    elif style == "ms":
        assert error.retry_after == pytest.approx(10.0, abs=0.1)  # 6 rpm: one per 10 s
    elif style == "seconds":
        assert error.retry_after == 10.0
    else:  # an HTTP-date has whole seconds only
        assert error.retry_after is not None and 8.0 <= error.retry_after <= 11.5


@pytest.mark.parametrize(
    ("body", "concurrency"),
    [
        ({"error": {"message": "Too many concurrent requests", "code": "rate_limit"}}, True),
        ({"error": {"message": "您当前使用该API的并发数过高，请降低并发", "code": "1302"}}, True),
        (
            {
                "error": {
                    "message": "request reached organization max concurrency: 2",
                    "type": "rate_limit_reached_error",
                }
            },
            True,
        ),
        ({"error": {"message": "x", "code": "concurrency_limit_exceeded"}}, True),
        ({"error": {"message": "Rate limit reached for requests", "code": "rpm"}}, False),
        ({"detail": "Too Many Requests"}, False),
    ],
)
async def test_a_429_that_says_concurrency_is_told_from_a_rate_limit(
    transport: Transport, body: dict[str, Any], concurrency: bool
) -> None:
    from aiohttp import web

    async def handle(_req: web.Request) -> web.Response:
        return web.json_response(body, status=429, headers={"Retry-After": "1"})

    url = await serve_once(handle)
    error = await failure(transport, target(url))
    assert isinstance(error, RateLimited) and error.retry_after == 1.0
    assert error.concurrency is concurrency


async def test_quota_exhaustion_sent_as_429_kills_the_key(transport: Transport) -> None:
    from aiohttp import web

    async def handle(_req: web.Request) -> web.Response:
        data = {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}}
        return web.json_response(data, status=429)

    url = await serve_once(handle)
    error = await failure(transport, target(url))
    assert isinstance(error, AuthError) and error.status == 429


async def test_a_content_filter_sent_as_403_is_not_taken_for_a_dead_key(
    transport: Transport,
) -> None:
    from aiohttp import web

    async def handle(_req: web.Request) -> web.Response:
        data = {"error": {"message": "Output blocked by content filter", "code": "content_filter"}}
        return web.json_response(data, status=403)

    url = await serve_once(handle)
    error = await failure(transport, target(url))
    assert isinstance(error, ContentFiltered) and error.status == 403


async def test_bad_requests_and_content_filters_are_fatal_with_reasons(
    simulator: Factory, transport: Transport
) -> None:
    sim = simulator(SimConfig(strict_models=True, models=("sim-model",)))
    bad = await failure(transport, target(sim), body("SQUALL_BAD_REQUEST please"))
    assert isinstance(bad, BadRequest) and not isinstance(bad, ContentFiltered)
    assert bad.status == 400 and "bad request" in bad.message
    filtered = await failure(transport, target(sim), body("SQUALL_CONTENT_FILTER please"))
    assert isinstance(filtered, ContentFiltered)
    assert filtered.status == 400 and "content management policy" in filtered.message
    model = await failure(
        transport,
        target(sim),
        json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(),
    )
    assert isinstance(model, BadRequest) and model.status == 404 and "nope" in model.message
    unreadable = await failure(transport, target(sim), b"{not json")
    assert isinstance(unreadable, BadRequest) and "JSON" in unreadable.message


@pytest.mark.parametrize("shape", ["openai", "string", "detail", "text", "html"])
@pytest.mark.parametrize("fault", ["p_500", "p_503"])
async def test_server_errors_in_every_shape_become_readable_reasons(
    simulator: Factory, transport: Transport, shape: str, fault: str
) -> None:
    sim = simulator(SimConfig(error_shape=shape, **{fault: 1.0}))  # type: ignore[arg-type]
    error = await failure(transport, target(sim))
    status = 500 if fault == "p_500" else 503
    assert isinstance(error, ServerError)
    assert error.status == status
    assert error.message.startswith(f"HTTP {status}: ")
    reason = error.message.split(": ", 1)[1]
    assert reason and "<" not in reason and "{" not in reason
    assert len(reason) < 120


@pytest.mark.parametrize("shape", ["truncated", "not_json", "no_choices"])
async def test_malformed_answers_are_retryable(
    simulator: Factory, transport: Transport, shape: str
) -> None:
    sim = simulator(SimConfig(p_malformed=1.0, malformed_shape=shape))  # type: ignore[arg-type]
    error = await failure(transport, target(sim))
    assert isinstance(error, MalformedResponse)
    assert error.status == 200 and "not a chat completion" in error.message


async def test_odd_success_bodies_are_malformed_not_a_crash(transport: Transport) -> None:
    from aiohttp import web

    bodies = iter(
        [
            {"choices": ["text"]},
            {"choices": [{"message": {"content": "hi"}}], "usage": "lots", "id": 5},
            {"choices": [{"text": "legacy"}], "usage": None},
            {"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}]},
            {"choices": [{"message": {"content": [{"type": "text", "text": "parts"}]}}]},
        ]
    )

    async def handle(_req: web.Request) -> web.Response:
        return web.json_response(next(bodies))

    url = await serve_once(handle)
    t = target(url)
    assert isinstance(await failure(transport, t), MalformedResponse)
    hi, _ = await transport.post(t, body())
    assert hi.text == "hi" and hi.prompt_tokens is None and hi.request_id is None
    legacy, _ = await transport.post(t, body())
    assert legacy.text == "legacy"
    assert isinstance(await failure(transport, t), ContentFiltered)
    parts, _ = await transport.post(t, body())
    assert parts.text is not None and "parts" in parts.text


async def test_a_connection_reset_mid_answer_is_connection_lost(
    simulator: Factory, transport: Transport
) -> None:
    sim = simulator(SimConfig(p_reset=1.0))
    error = await failure(transport, target(sim))
    assert isinstance(error, ConnectionLost)
    assert not error.refused


async def test_a_port_with_nothing_listening_is_a_refused_connection(
    transport: Transport, free_port: int
) -> None:
    error = await failure(transport, target(f"http://127.0.0.1:{free_port}/v1"))
    assert isinstance(error, ConnectionLost)
    assert error.refused
    assert str(free_port) in error.message


async def test_a_hanging_server_is_a_timeout(simulator: Factory, transport: Transport) -> None:
    sim = simulator(SimConfig(p_hang=1.0, hang_s=5.0))
    error = await failure(transport, target(sim, timeout_s=0.3))
    assert isinstance(error, RequestTimeout)


async def test_rate_headers_travel_with_an_error(simulator: Factory, transport: Transport) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, rpm=6),), send_ratelimit_headers=True))
    await transport.post(target(sim), body())
    error = await failure(transport, target(sim))
    assert isinstance(error, RateLimited)
    assert error.rate is not None and error.rate.limit_requests == 6
    assert error.rate.remaining_requests == 0


# -- a one-route server for bodies the simulator does not send -----------------------------------

_RUNNERS: list[object] = []


async def serve_once(handler: Callable[..., object]) -> str:
    """Serve `handler` for POST /v1/chat/completions on 127.0.0.1; return the base URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    _RUNNERS.append(runner)
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(autouse=True)
async def _cleanup_servers() -> AsyncIterator[None]:
    yield
    while _RUNNERS:
        runner = _RUNNERS.pop()
        await runner.cleanup()  # type: ignore[attr-defined]


# -- the operation decides the path and reads the answer ------------------------------------------


class _EchoOperation(ChatOperation):
    """A request kind of its own path, whose answer is the body as text."""

    name = "echo"
    path = "/echo"

    def parse(self, raw: bytes, keep_raw: bool, redact: Callable[[str], str]) -> Completion:
        return Completion(
            text=raw.decode(), finish_reason="echo", prompt_tokens=None, completion_tokens=None
        )


def test_a_target_posts_to_the_operations_path() -> None:
    t = make_target("http://h/v1", KEY, timeout_s=5, extra_headers={}, operation=_EchoOperation())
    assert t.url == "http://h/v1/echo"
    assert make_target("http://h/v1", KEY, timeout_s=5, extra_headers={}, operation=CHAT).url == (
        "http://h/v1/chat/completions"
    )


async def test_the_transport_reads_answers_through_its_operation() -> None:
    from aiohttp import web

    async def handle(req: web.Request) -> web.Response:
        return web.Response(body=await req.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/echo", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    _RUNNERS.append(runner)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    echo = _EchoOperation()
    async with Transport(
        max_connections=2, redactor=Redactor([]), keep_raw=False, operation=echo
    ) as t:
        done, _ = await t.post(
            make_target(base, "", timeout_s=5, extra_headers={}, operation=echo), b'{"a": 1}'
        )
    assert done.text == '{"a": 1}' and done.finish_reason == "echo"


def test_a_targets_repr_never_shows_its_key() -> None:
    # Targets travel to Ray workers (squall.ray.actors.WorkerSetup), where a repr may be
    # logged: the headers holding the key are left out of it.
    from squall.transport import make_target

    target = make_target(
        "http://127.0.0.1:9/v1", "sk-REPRSECRET0000111122223333", timeout_s=5.0, extra_headers={}
    )
    assert "REPRSECRET" not in repr(target) and "/chat/completions" in repr(target)
