"""BatchClient against the simulator's Files and Batch API over real HTTP on 127.0.0.1.

The simulator's random faults apply to online requests only, never to /v1/files or
/v1/batches, so the retry paths are tested against a tiny aiohttp server started in the test
(test equipment, like the simulator) that answers each request from a script.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from squall.batchapi import BatchClient, BatchInfo, RequestCounts
from squall.errors import BatchAPIError
from squall.redact import Redactor
from squall.simulator import BatchSettings, SimConfig, SimKey, Simulator

KEY = "sk-test-aaaaaaaaaaaa1111"
WRONG = "sk-wrong-zzzzzzzzzzzz9999"
CHAT = "/v1/chat/completions"
Factory = Callable[..., Simulator]
Json = dict[str, Any]

FAST = BatchSettings(validating_s=0.01, line_s=0.001, finalizing_s=0.01, cancelling_s=0.01)


def sim_config(**batches: Any) -> SimConfig:
    settings = BatchSettings(**{**FAST.__dict__, **batches})
    return SimConfig(keys=(SimKey(key=KEY),), batches=settings, echo_key_in_errors=True)


@asynccontextmanager
async def batch_client(base_url: str, key: str = KEY, **kw: Any) -> AsyncIterator[BatchClient]:
    async with aiohttp.ClientSession() as session:
        yield BatchClient(
            session,
            base_url,
            {"Authorization": f"Bearer {key}"},
            redact=Redactor([KEY, WRONG]),
            **kw,
        )


def write_lines(path: Path, custom_ids: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for custom_id in custom_ids:
            body = {"model": "m", "messages": [{"role": "user", "content": f"say {custom_id}"}]}
            line = {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}
            f.write(json.dumps(line) + "\n")
    return path


async def wait_done(client: BatchClient, batch_id: str, timeout_s: float = 10.0) -> BatchInfo:
    deadline = time.monotonic() + timeout_s
    while True:
        info = await client.get(batch_id)
        if info.terminal:
            return info
        assert time.monotonic() < deadline, f"batch still {info.status} after {timeout_s} s"
        await asyncio.sleep(0.01)


async def test_upload_create_poll_and_download_the_output(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config())
    ids = [f"row-{i}" for i in range(12)]
    source = write_lines(tmp_path / "in.jsonl", ids)
    async with batch_client(sim.base_url) as client:
        file_id = await client.upload(source)
        assert file_id.startswith("file-")
        created = await client.create(file_id, CHAT, {"squall_run": "abc"})
        assert created.status == "validating" and not created.terminal
        assert created.input_file_id == file_id and created.endpoint == CHAT
        assert created.metadata == {"squall_run": "abc"}
        assert isinstance(created.created_at, float)
        done = await wait_done(client, created.id)
        assert done.status == "completed" and done.terminal and done.errors == ()
        assert done.request_counts == RequestCounts(total=12, completed=12, failed=0)
        assert done.output_file_id is not None and done.error_file_id is None
        dest = tmp_path / "out.jsonl"
        written = await client.download(done.output_file_id, dest)
    assert written == dest.stat().st_size > 0
    assert not dest.with_suffix(".jsonl.part").exists()
    lines = [json.loads(line) for line in dest.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(ids)
    assert all(line["response"]["status_code"] == 200 for line in lines)
    uploads = [e for e in sim.ledger() if e.event == "file_upload"]
    assert [e.file_id for e in uploads] == [file_id]


async def test_the_upload_names_the_file_as_asked_and_keeps_its_bytes(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config())
    source = write_lines(tmp_path / "in.jsonl", [f"r{i}" for i in range(2000)])  # ~200 KB
    async with aiohttp.ClientSession() as session, batch_client(sim.base_url) as client:
        file_id = await client.upload(source, filename="named.jsonl")
        headers = {"Authorization": f"Bearer {KEY}"}
        async with session.get(f"{sim.base_url}/files/{file_id}", headers=headers) as r:
            info = await r.json()
        assert info["filename"] == "named.jsonl" and info["purpose"] == "batch"
        dest = tmp_path / "back.jsonl"
        assert await client.download(file_id, dest) == source.stat().st_size
    assert dest.read_bytes() == source.read_bytes()


async def test_find_adopts_a_batch_by_its_metadata_across_pages(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config(validating_s=60.0))  # they stay "validating": no work done
    source = write_lines(tmp_path / "in.jsonl", ["a"])
    async with batch_client(sim.base_url) as client:
        file_id = await client.upload(source)
        made = [await client.create(file_id, CHAT, {"run": f"r{i}", "k": "v"}) for i in range(5)]
        # Newest first, 2 a page: r0 (the oldest) is on the third page.
        found = await client.find({"run": "r0", "k": "v"}, _page=2)
        assert found is not None and found.id == made[0].id
        newest = await client.find({"k": "v"}, _page=2)
        assert newest is not None and newest.id == made[4].id
        assert await client.find({"run": "r0"}, _page=2, max_pages=2) is None
        assert await client.find({"run": "r9"}, _page=2) is None
        assert await client.find({"run": "r0", "k": "other"}) is None
        later = time.time() + 3600
        assert await client.find({"run": "r4"}, newer_than=later) is None
        earlier = time.time() - 3600
        found = await client.find({"run": "r1"}, newer_than=earlier, _page=2)
        assert found is not None and found.id == made[1].id


async def test_cancel_ends_a_batch_and_a_second_cancel_is_no_error(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config(validating_s=60.0))
    source = write_lines(tmp_path / "in.jsonl", ["a", "b"])
    async with batch_client(sim.base_url) as client:
        created = await client.create(await client.upload(source), CHAT, {})
        cancelling = await client.cancel(created.id)
        assert cancelling.id == created.id and cancelling.status in ("cancelling", "cancelled")
        done = await wait_done(client, created.id)
        assert done.status == "cancelled"
        assert done.request_counts.failed == done.request_counts.total
        again = await client.cancel(created.id)  # 409 from the provider: already over
        assert again.status == "cancelled"


async def test_a_failed_batch_carries_its_errors(simulator: Factory, tmp_path: Path) -> None:
    sim = simulator(sim_config())
    source = tmp_path / "in.jsonl"
    source.write_text('{"custom_id": "a"}\nnot json\n')
    async with batch_client(sim.base_url) as client:
        created = await client.create(await client.upload(source), CHAT, {})
        done = await wait_done(client, created.id)
    assert done.status == "failed" and done.errors
    assert any(", line 2" in e for e in done.errors), done.errors


async def test_an_unknown_batch_or_file_is_not_retryable(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config())
    async with batch_client(sim.base_url) as client:
        with pytest.raises(BatchAPIError) as got:
            await client.get("batch_nope")
        assert got.value.status == 404 and not got.value.retryable
        assert "the batch batch_nope is not on this account" in str(got.value)
        with pytest.raises(BatchAPIError) as got:
            await client.download("file-nope", tmp_path / "x.jsonl")
        assert got.value.status == 404 and "the file file-nope is not on this account" in str(
            got.value
        )
        assert not (tmp_path / "x.jsonl").exists()
        assert not (tmp_path / "x.jsonl.part").exists()
        with pytest.raises(BatchAPIError) as got:
            await client.create("file-nope", CHAT, {})
        assert "the file file-nope is not on this account" in str(got.value)
        with pytest.raises(BatchAPIError) as got:
            await client.upload(tmp_path / "missing.jsonl")
        assert not got.value.retryable and got.value.status is None


async def test_a_wrong_key_is_not_retryable_and_never_shown(
    simulator: Factory, tmp_path: Path
) -> None:
    sim = simulator(sim_config())  # echo_key_in_errors: the 401 body holds the key
    source = write_lines(tmp_path / "in.jsonl", ["a"])
    async with batch_client(sim.base_url, key=WRONG, retries=3) as client:
        for call in (client.upload(source), client.get("batch_x"), client.find({"a": "b"})):
            with pytest.raises(BatchAPIError) as got:
                await call
            error = got.value
            assert error.status == 401 and not error.retryable
            assert "check the key" in str(error)
            assert WRONG not in str(error) and WRONG not in repr(error)
            assert "...9999" in str(error)  # the provider's message, masked
    assert not [e for e in sim.ledger() if e.event == "file_upload"]


# -- a scripted server for the paths the simulator never takes ---------------------------------

Handler = Callable[[web.Request], web.StreamResponse]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    """Yield `serve(handler)`: serves `handler` on 127.0.0.1 and returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        async def handle(request: web.Request) -> web.StreamResponse:
            return handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


def batch_json(status: str = "in_progress") -> Json:
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": CHAT,
        "input_file_id": "file-1",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1700000000,
        "request_counts": {"total": 3, "completed": 1, "failed": 0},
        "metadata": None,
        "errors": None,
    }


Answer = Callable[[], web.StreamResponse]


def answer(status: int, body: str | Json, headers: dict[str, str] | None = None) -> Answer:
    """Return a maker of one answer (an aiohttp response is sent once only)."""
    if isinstance(body, str):
        return lambda: web.Response(status=status, text=body, headers=headers)
    return lambda: web.json_response(body, status=status, headers=headers)


def script(*answers: Answer) -> tuple[Handler, list[str]]:
    """Return a handler giving `answers` in turn (the last one again and again), and its log."""
    seen: list[str] = []

    def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        return answers[min(len(seen), len(answers)) - 1]()

    return handler, seen


async def test_5xx_and_429_are_tried_again_until_an_answer(
    serve: Callable[[Handler], Any],
) -> None:
    handler, seen = script(
        answer(503, "upstream busy"),
        answer(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"}),
        answer(500, "oops"),
        answer(200, batch_json()),
    )
    base = await serve(handler)
    start = time.monotonic()
    async with batch_client(base, retries=4, backoff_s=0.01) as client:
        info = await client.get("batch_1")
    assert time.monotonic() - start >= 0.3  # Retry-After was waited, not the tiny backoff
    assert seen == ["GET /v1/batches/batch_1"] * 4
    assert info.request_counts == RequestCounts(3, 1, 0) and info.metadata == {}
    assert info.created_at == 1700000000.0


async def test_retries_run_out_into_a_retryable_error(serve: Callable[[Handler], Any]) -> None:
    handler, seen = script(answer(502, f"bad gateway for {KEY}"))
    base = await serve(handler)
    async with batch_client(base, retries=3, backoff_s=0.01) as client:
        with pytest.raises(BatchAPIError) as got:
            await client.cancel("batch_1")
    assert len(seen) == 3 and got.value.retryable and got.value.status == 502
    assert "gave up after 3 tries" in str(got.value) and KEY not in str(got.value)


async def test_a_body_that_is_not_json_or_not_a_batch_is_retryable(
    serve: Callable[[Handler], Any],
) -> None:
    handler, seen = script(
        answer(200, "<html>hello</html>"),
        answer(200, {"object": "list", "data": []}),
    )
    base = await serve(handler)
    async with batch_client(base, retries=2, backoff_s=0.01) as client:
        with pytest.raises(BatchAPIError) as got:
            await client.get("batch_1")
    assert len(seen) == 2 and got.value.retryable
    assert "not a Batch object" in str(got.value)


async def test_an_endpoint_without_a_batch_api_says_to_run_without_it(
    serve: Callable[[Handler], Any], tmp_path: Path
) -> None:
    handler, _ = script(answer(404, {"detail": "Not Found"}))
    base = await serve(handler)
    source = write_lines(tmp_path / "in.jsonl", ["a"])
    async with batch_client(base) as client:
        for call in (client.upload(source), client.create("file-1", CHAT, {}), client.find({})):
            with pytest.raises(BatchAPIError) as got:
                await call
            assert got.value.status == 404 and not got.value.retryable
            assert "offers no Batch API" in str(got.value)
            assert "run without --batch-api" in str(got.value)


async def test_a_download_cut_short_is_tried_again_from_the_start(
    serve: Callable[[Handler], Any], tmp_path: Path
) -> None:
    content = b"".join(b'{"custom_id": "r%d"}\n' % i for i in range(20_000))
    tries: list[int] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        tries.append(1)
        resp = web.StreamResponse(headers={"Content-Length": str(len(content))})
        await resp.prepare(request)
        if len(tries) == 1:
            await resp.write(content[:1000])
            assert request.transport is not None
            request.transport.close()  # cut the connection mid-body
            return resp
        for start in range(0, len(content), 50_000):
            await resp.write(content[start : start + 50_000])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/files/{id}/content", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        host, port = runner.addresses[0][:2]
        dest = tmp_path / "out.jsonl"
        dest.write_bytes(b"old")
        async with batch_client(f"http://{host}:{port}/v1", backoff_s=0.01) as client:
            written = await client.download("file-1", dest)
    finally:
        await runner.cleanup()
    assert len(tries) == 2 and written == len(content)
    assert dest.read_bytes() == content
    assert not (tmp_path / "out.jsonl.part").exists()


def test_from_json_refuses_what_is_not_a_batch() -> None:
    for bad in ({}, {"object": "list"}, {**batch_json(), "request_counts": {"total": "3"}}):
        with pytest.raises(BatchAPIError) as got:
            BatchInfo.from_json(bad)
        assert not got.value.retryable
    info = BatchInfo.from_json(
        {
            **batch_json("failed"),
            "metadata": {"a": "b"},
            "errors": {"data": [{"code": "bad_line", "message": "No.", "line": 3}]},
        }
    )
    assert info.terminal and info.errors == ("bad_line: No., line 3",)
    assert info.metadata == {"a": "b"}


async def test_a_create_whose_answer_was_lost_adopts_the_batch_made_instead_of_a_second(
    serve: Callable[[Handler], Any],
) -> None:
    # The provider makes the batch, then the answer is lost (a 502 from its gateway): a
    # plain retry would make a second batch and pay for every row twice.
    made = {**batch_json("validating"), "metadata": {"squall_run": "r1", "squall_chunk": "3"}}
    seen: list[str] = []

    def handler(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path}")
        if request.method == "POST":
            return web.Response(status=502, text="bad gateway")
        listing = {"object": "list", "data": [made], "has_more": False}
        return web.json_response(listing)

    base = await serve(handler)
    async with batch_client(base, retries=4, backoff_s=0.01) as client:
        info = await client.create("file-1", CHAT, {"squall_run": "r1", "squall_chunk": "3"})
    assert info.id == "batch_1" and info.metadata["squall_chunk"] == "3"
    assert seen == ["POST /v1/batches", "GET /v1/batches"]  # made once, found, not made again
