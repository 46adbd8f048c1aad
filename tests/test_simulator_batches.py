"""The simulator's Files and Batch API (/v1/files, /v1/batches), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from squall.errors import ConfigError
from squall.simulator import (
    BatchSettings,
    SimConfig,
    SimKey,
    Simulator,
    expected_answer,
    expected_embedding,
    iter_ledger_file,
    max_in_window,
)
from squall.testing import start_simulator_process, stop_process

KEY = "sk-test-aaaaaaaaaaaa1111"
KEY2 = "sk-test-bbbbbbbbbbbb2222"
CHAT = "/v1/chat/completions"
Factory = Callable[..., Simulator]
Json = dict[str, Any]

FAST = BatchSettings(validating_s=0.01, line_s=0.001, finalizing_s=0.01, cancelling_s=0.01)


def config(**batches: Any) -> SimConfig:
    settings = BatchSettings(**{**FAST.__dict__, **batches})
    return SimConfig(keys=(SimKey(key=KEY, rpm=1), SimKey(key=KEY2)), batches=settings)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Client:
    """A tiny Batch API client over aiohttp (what a test needs, nothing more)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str = KEY) -> None:
        self.session, self.base = session, base_url
        self.headers = {"Authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, headers=self.headers, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.read()

    async def upload(self, lines: list[Any] | bytes, purpose: str = "batch") -> Json:
        data = (
            lines
            if isinstance(lines, bytes)
            else "".join(
                (x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines
            ).encode()
        )
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field(
            "file", io.BytesIO(data), filename="in.jsonl", content_type="application/jsonl"
        )
        status, body = await self.call("POST", "/files", data=form)
        assert status == 200, body
        return dict(body)

    async def create(self, file_id: str, endpoint: str = CHAT, **kw: Any) -> tuple[int, Json]:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **kw}
        return await self.call("POST", "/batches", json=body)

    async def wait(self, batch_id: str, until: frozenset[str], timeout_s: float = 10.0) -> Json:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            status, batch = await self.call("GET", f"/batches/{batch_id}")
            assert status == 200
            if batch["status"] in until:
                return dict(batch)
            assert loop.time() < deadline, f"batch still {batch['status']} after {timeout_s} s"
            await asyncio.sleep(0.005)

    async def lines(self, file_id: str | None) -> list[Json]:
        assert file_id is not None
        status, raw = await self.call("GET", f"/files/{file_id}/content")
        assert status == 200
        return [json.loads(line) for line in raw.decode().splitlines()]


DONE = frozenset({"completed", "failed", "expired", "cancelled"})


def chat_line(custom_id: str, prompt: str, url: str = CHAT) -> Json:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


async def test_a_batch_runs_to_completed_with_each_line_answered_as_online(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(line_s=0.005))  # 30 lines: 0.15 s in_progress, seen by polling
    client = Client(session, sim.base_url)
    prompts = {f"r{i}": f"what is {i} + {i * 3}" for i in range(30)}
    uploaded = await client.upload([chat_line(c, p) for c, p in prompts.items()])
    assert uploaded["object"] == "file" and uploaded["id"].startswith("file-")
    assert uploaded["purpose"] == "batch" and uploaded["filename"] == "in.jsonl"
    assert isinstance(uploaded["bytes"], int) and isinstance(uploaded["created_at"], int)
    status, info = await client.call("GET", f"/files/{uploaded['id']}")
    assert (status, info) == (200, uploaded)

    status, batch = await client.create(uploaded["id"], metadata={"job": "t1"})
    assert status == 200 and batch["object"] == "batch" and batch["id"].startswith("batch_")
    assert batch["status"] == "validating" and batch["metadata"] == {"job": "t1"}
    seen = {batch["status"]}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while batch["status"] != "completed":
        assert loop.time() < deadline
        _, batch = await client.call("GET", f"/batches/{batch['id']}")
        seen.add(batch["status"])
        await asyncio.sleep(0.001)
    assert {"validating", "in_progress", "completed"} <= seen
    assert batch["request_counts"] == {"total": 30, "completed": 30, "failed": 0}
    assert batch["error_file_id"] is None and batch["errors"] is None
    stamps = ("created_at", "in_progress_at", "finalizing_at", "completed_at", "expires_at")
    assert all(isinstance(batch[s], int) for s in stamps)

    out = await client.lines(batch["output_file_id"])
    assert sorted(line["custom_id"] for line in out) == sorted(prompts)
    assert [line["custom_id"] for line in out] != list(prompts)  # shuffled
    for line in out:
        assert line["error"] is None and line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        content = response["body"]["choices"][0]["message"]["content"]
        assert content == expected_answer(prompts[line["custom_id"]])
    _, meta = await client.call("GET", f"/files/{batch['output_file_id']}")
    assert meta["purpose"] == "batch_output"


async def test_batch_lines_skip_online_limits_and_embeddings_match(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())  # KEY has rpm=1: online, a second request would get 429
    client = Client(session, sim.base_url)
    texts = ["alpha", "beta", "gamma"]
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "m", "input": t, "dimensions": 8},
        }
        for i, t in enumerate(texts)
    ]
    uploaded = await client.upload(lines)
    _, batch = await client.create(uploaded["id"], endpoint="/v1/embeddings")
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "completed"
    for line in await client.lines(batch["output_file_id"]):
        text = texts[int(line["custom_id"][1:])]
        vector = line["response"]["body"]["data"][0]["embedding"]
        assert vector == pytest.approx(expected_embedding(text, 8))
    assert max_in_window(sim.ledger(), KEY, 60) == 0  # nothing counted online


async def test_bad_bodies_go_to_the_error_file(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())
    client = Client(session, sim.base_url)
    bad = {"custom_id": "bad", "method": "POST", "url": CHAT, "body": {"model": "m"}}
    lines = [chat_line("ok", "1 + 1"), bad, chat_line("filtered", "SQUALL_BAD_REQUEST")]
    _, batch = await client.create((await client.upload(lines))["id"])
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    [ok] = await client.lines(batch["output_file_id"])
    assert ok["custom_id"] == "ok"
    errors = {line["custom_id"]: line for line in await client.lines(batch["error_file_id"])}
    assert set(errors) == {"bad", "filtered"}
    for line in errors.values():
        assert line["error"] is None
        assert line["response"]["status_code"] == 400
        assert line["response"]["request_id"].startswith("req_")
        assert line["response"]["body"]["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"not json\n", "invalid_json_line"),
        (json.dumps(chat_line("a", "x", url="/v1/embeddings")).encode(), "mismatched_endpoint"),
        ((json.dumps(chat_line("a", "x")) + "\n") * 2, "duplicate_custom_id"),
        (json.dumps({"custom_id": "a", "method": "POST", "url": CHAT}).encode(), None),
        (b"\n", "empty_file"),
    ],
)
async def test_a_bad_file_fails_the_batch_in_validating(
    simulator: Factory, session: aiohttp.ClientSession, content: bytes | str, code: str | None
) -> None:
    sim = simulator(config())
    client = Client(session, sim.base_url)
    data = content.encode() if isinstance(content, str) else content
    _, batch = await client.create((await client.upload(data))["id"])
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "failed" and isinstance(batch["failed_at"], int)
    assert batch["in_progress_at"] is None and batch["output_file_id"] is None
    assert batch["errors"]["object"] == "list"
    [error] = batch["errors"]["data"]
    assert error["code"] == (code or "missing_required_parameter")
    assert set(error) == {"code", "message", "param", "line"}


async def test_a_fault_marker_or_probability_fails_a_batch(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(p_fail=1.0))
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line("a", "x")]))["id"]
    _, batch = await client.create(file_id)
    assert (await client.wait(batch["id"], DONE))["status"] == "failed"

    sim2 = simulator(config())
    client2 = Client(session, sim2.base_url)
    file_id = (await client2.upload([chat_line("a", "x")]))["id"]
    _, batch = await client2.create(file_id, metadata={"squall_fault": "fail"})
    batch = await client2.wait(batch["id"], DONE)
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "simulated_failure"


async def test_cancel_mid_way_keeps_the_lines_done(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(line_s=0.02, cancelling_s=0.05))
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line(f"r{i}", str(i)) for i in range(100)]))["id"]
    _, batch = await client.create(file_id)
    await client.wait(batch["id"], frozenset({"in_progress"}))
    await asyncio.sleep(0.1)
    status, cancelling = await client.call("POST", f"/batches/{batch['id']}/cancel")
    assert status == 200 and cancelling["status"] == "cancelling"
    assert isinstance(cancelling["cancelling_at"], int)
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "cancelled" and isinstance(batch["cancelled_at"], int)
    counts = batch["request_counts"]
    assert 0 < counts["completed"] < 100
    assert counts["completed"] + counts["failed"] == counts["total"] == 100
    done = await client.lines(batch["output_file_id"])
    assert len(done) == counts["completed"]
    left = await client.lines(batch["error_file_id"])
    assert {line["error"]["code"] for line in left} == {"batch_cancelled"}
    assert {line["custom_id"] for line in done + left} == {f"r{i}" for i in range(100)}
    status, again = await client.call("POST", f"/batches/{batch['id']}/cancel")
    assert status == 409 and "cancelled" in again["error"]["message"]


async def test_cancel_while_validating_and_online_rows_are_told_apart(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(validating_s=5.0))
    client = Client(session, sim.base_url, KEY2)
    file_id = (await client.upload([chat_line("a", "what is 2 + 2")]))["id"]
    _, batch = await client.create(file_id)
    status, cancelling = await client.call("POST", f"/batches/{batch['id']}/cancel")
    assert status == 200 and cancelling["status"] == "cancelling"
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "cancelled" and batch["request_counts"]["total"] == 0
    assert batch["output_file_id"] is None and batch["error_file_id"] is None

    # The same prompt online and in a second batch: the ledger tells the three apart.
    body = chat_line("x", "what is 2 + 2")["body"]
    assert (await client.call("POST", "/chat/completions", json=body))[0] == 200
    sim2_batch = (await client.create(file_id))[1]
    await client.wait(sim2_batch["id"], DONE)
    entries = sim.ledger()
    online = [e for e in entries if e.online]
    lines = [e for e in entries if e.event == "batch_line"]
    assert len(online) == 1 and [e.batch_id for e in lines] == [sim2_batch["id"]]
    assert online[0].prompt_sha256 == lines[0].prompt_sha256 != ""


async def test_a_batch_not_done_in_time_expires_with_its_work_kept(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    # Nominal seconds, scaled: lines of 10 s and a 5000 s window run as 1 ms and 0.5 s, so
    # the 2000 lines need at least 2 s and some, but not all, are done in the window.
    sim = simulator(config(line_s=10, expire_after_s=5000, time_scale=0.0001))
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line(f"r{i}", str(i)) for i in range(2000)]))["id"]
    _, batch = await client.create(file_id)
    batch = await client.wait(batch["id"], DONE)
    assert batch["status"] == "expired" and isinstance(batch["expired_at"], int)
    counts = batch["request_counts"]
    assert 0 < counts["completed"] < 2000 and counts["completed"] + counts["failed"] == 2000
    assert len(await client.lines(batch["output_file_id"])) == counts["completed"]
    left = await client.lines(batch["error_file_id"])
    assert {line["error"]["code"] for line in left} == {"batch_expired"}
    assert all(line["response"] is None for line in left)


async def test_listing_is_newest_first_with_limit_and_after(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line("a", "x")]))["id"]
    ids = [(await client.create(file_id))[1]["id"] for _ in range(5)]
    status, page = await client.call("GET", "/batches", params={"limit": "2"})
    assert status == 200 and page["object"] == "list"
    assert [b["id"] for b in page["data"]] == ids[::-1][:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[4], ids[3], True)
    _, page = await client.call("GET", "/batches", params={"limit": "2", "after": ids[3]})
    assert [b["id"] for b in page["data"]] == [ids[2], ids[1]] and page["has_more"]
    _, page = await client.call("GET", "/batches", params={"after": ids[1]})
    assert [b["id"] for b in page["data"]] == [ids[0]] and not page["has_more"]
    status, _ = await client.call("GET", "/batches", params={"limit": "0"})
    assert status == 400
    for batch_id in ids:
        await client.wait(batch_id, DONE)


async def test_files_and_batches_belong_to_their_key(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())
    mine, theirs = Client(session, sim.base_url), Client(session, sim.base_url, KEY2)
    file_id = (await mine.upload([chat_line("a", "x")]))["id"]
    _, batch = await mine.create(file_id)
    assert (await theirs.call("GET", f"/files/{file_id}"))[0] == 404
    assert (await theirs.call("GET", f"/files/{file_id}/content"))[0] == 404
    assert (await theirs.create(file_id))[0] == 404
    assert (await theirs.call("GET", f"/batches/{batch['id']}"))[0] == 404
    assert (await theirs.call("POST", f"/batches/{batch['id']}/cancel"))[0] == 404
    _, listed = await theirs.call("GET", "/batches")
    assert listed["data"] == [] and listed["first_id"] is None
    _, files = await theirs.call("GET", "/files")
    assert files["data"] == []
    await mine.wait(batch["id"], DONE)
    for key in ("sk-unknown-000000000000", None):
        outsider = Client(session, sim.base_url, key or "")
        if key is None:
            outsider.headers = {}
        for method, path in (("GET", "/batches"), ("GET", f"/files/{file_id}")):
            status, body = await outsider.call(method, path)
            assert status == 401 and "error" in body


async def test_a_file_comes_back_byte_for_byte_past_one_mib(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())
    client = Client(session, sim.base_url)
    data = (json.dumps(chat_line("a", "x" * 1000)) + "\r\n").encode() * 1500 + b"\xe2\x82\xac"
    uploaded = await client.upload(data)
    assert uploaded["bytes"] == len(data) > 1024 * 1024
    assert (await client.call("GET", f"/files/{uploaded['id']}/content")) == (200, data)


async def test_bad_creations_and_uploads_are_refused(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config())
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line("a", "x")]))["id"]
    other = (await client.upload([chat_line("a", "x")], purpose="fine-tune"))["id"]
    cases: list[tuple[Json, int, str]] = [
        ({"endpoint": "/v1/moderations"}, 400, "endpoint"),
        ({"completion_window": "1h"}, 400, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
        ({"metadata": {"k": 1}}, 400, "metadata"),
        ({"input_file_id": "file-nope"}, 404, "input_file_id"),
        ({"input_file_id": other}, 400, "input_file_id"),
    ]
    for change, status, param in cases:
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **change}
        got, data = await client.call("POST", "/batches", json=body)
        assert (got, data["error"]["param"]) == (status, param), change
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    got, data = await client.call("POST", "/files", data=form)
    assert got == 400 and data["error"]["param"] == "file"
    got, data = await client.call("DELETE", f"/files/{file_id}")
    assert got == 200 and data == {"id": file_id, "object": "file", "deleted": True}
    assert (await client.call("GET", f"/files/{file_id}"))[0] == 404


async def test_the_ledger_records_uploads_creations_and_lines(
    simulator: Factory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ledger_file = tmp_path / "served.jsonl"
    sim = simulator(config(), ledger_file=ledger_file)
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line("a", "1 + 2"), chat_line("b", "hello")]))["id"]
    _, batch = await client.create(file_id, metadata={"job": "j"})
    await client.wait(batch["id"], DONE)
    entries = sim.ledger()
    assert [e.event for e in entries][:2] == ["file_upload", "batch_create"]
    assert entries[0].file_id == file_id and entries[1].batch_id == batch["id"]
    assert entries[1].metadata == {"job": "j"} and entries[1].kind == CHAT
    lines = [e for e in entries if e.event == "batch_line"]
    assert sorted(e.custom_id for e in lines) == ["a", "b"]
    assert {(e.batch_id, e.kind, e.status, e.served) for e in lines} == {
        (batch["id"], CHAT, 200, False)
    }
    assert all(not e.online for e in entries) and sim.served_count() == 0
    assert KEY not in ledger_file.read_text()
    assert list(iter_ledger_file(ledger_file)) == entries


def test_old_ledger_lines_and_configs_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    old = {"t": 1.0, "key": "sk-...1111", "model": "m", "prompt_sha256": "", "status": 200}
    path.write_text(json.dumps({**old, "served": True, "fault": ""}) + "\n")
    [entry] = iter_ledger_file(path)
    assert entry.online and entry.inputs == 1 and entry.batch_id == "" and entry.metadata is None
    cfg = config(time_scale=0.5)
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SimConfig.from_dict({}).batches == BatchSettings()
    with pytest.raises(ConfigError):
        BatchSettings(line_s=-1)
    with pytest.raises(ConfigError):
        SimConfig.from_dict({"batches": {"nope": 1}})


async def test_batches_work_in_the_simulator_process(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ledger_file = tmp_path / "served.jsonl"
    proc, base_url = start_simulator_process(config(), ledger_file)
    try:
        client = Client(session, base_url)
        file_id = (await client.upload([chat_line("a", "6 x 7")]))["id"]
        _, batch = await client.create(file_id)
        batch = await client.wait(batch["id"], DONE)
        [line] = await client.lines(batch["output_file_id"])
        assert line["response"]["body"]["choices"][0]["message"]["content"] == "42"
    finally:
        stop_process(proc)
    events = [e.event for e in iter_ledger_file(ledger_file)]
    assert events == ["file_upload", "batch_create", "batch_line", "file_download"]


DELAY = 0.3


async def _timed(call: Any) -> tuple[float, Any]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await call
    return loop.time() - start, result


async def test_the_upload_and_content_delays_hold_their_requests_in_real_seconds(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    # time_scale is tiny: the delays are real seconds all the same.
    sim = simulator(config(upload_delay_s=DELAY, content_delay_s=DELAY, time_scale=0.001))
    client = Client(session, sim.base_url)
    took, uploaded = await _timed(client.upload([chat_line("a", "1 + 1")]))
    assert took >= DELAY and uploaded["id"].startswith("file-")
    took, (status, data) = await _timed(client.call("GET", f"/files/{uploaded['id']}/content"))
    assert took >= DELAY and status == 200 and data.startswith(b'{"custom_id": "a"')
    took, (status, _) = await _timed(client.call("GET", f"/files/{uploaded['id']}"))
    assert took < DELAY and status == 200  # the File object itself is not delayed
    downloads = [e for e in sim.ledger() if e.event == "file_download"]
    assert [(e.file_id, e.status, e.served, e.online) for e in downloads] == [
        (uploaded["id"], 200, False, False)
    ]
    assert sim.served_count() == 0


async def test_a_created_batch_is_listed_before_its_delayed_reply_arrives(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(create_reply_delay_s=DELAY))
    client = Client(session, sim.base_url)
    file_id = (await client.upload([chat_line("a", "1 + 1")]))["id"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    creating = asyncio.create_task(client.create(file_id, metadata={"job": "pending"}))
    listed: list[Json] = []
    while not listed:
        assert loop.time() - start < DELAY, "the batch was not listed while its reply waited"
        _, page = await client.call("GET", "/batches")
        listed = page["data"]
    assert not creating.done()
    [batch] = listed
    assert batch["metadata"] == {"job": "pending"} and isinstance(batch["created_at"], int)
    creates = [e for e in sim.ledger() if e.event == "batch_create"]
    assert [e.batch_id for e in creates] == [batch["id"]]
    status, created = await creating
    assert loop.time() - start >= DELAY
    assert status == 200 and created["id"] == batch["id"]
    assert created["status"] == "validating"  # the reply describes the batch as created
    _, again = await client.call("GET", "/batches")
    newest = [b["id"] for b in again["data"]]
    second = (await client.create(file_id))[1]["id"]
    _, again = await client.call("GET", "/batches")
    assert [b["id"] for b in again["data"]] == [second, *newest]  # newest first
    assert all(isinstance(b["created_at"], int) and "metadata" in b for b in again["data"])
    for batch_id in (batch["id"], second):
        await client.wait(batch_id, DONE)


async def test_an_upload_cut_during_its_delay_stores_no_file(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(config(upload_delay_s=DELAY))
    url = urlsplit(sim.base_url)
    assert url.hostname is not None and url.port is not None
    content = json.dumps(chat_line("a", "1 + 1")).encode() + b"\n"
    boundary = "squallboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {url.path}/files HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    _, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(head + body)  # the whole body sent: the server holds it for DELAY
    await writer.drain()
    await asyncio.sleep(DELAY / 3)
    writer.close()  # the client dies before the reply
    await writer.wait_closed()
    await asyncio.sleep(DELAY)
    client = Client(session, sim.base_url)
    _, files = await client.call("GET", "/files")
    assert files["data"] == []
    assert [e.event for e in sim.ledger()] == []
    uploaded = await client.upload([chat_line("a", "1 + 1")])  # one waited for is stored
    _, files = await client.call("GET", "/files")
    assert [f["id"] for f in files["data"]] == [uploaded["id"]]
    assert [e.event for e in sim.ledger()] == ["file_upload"]


def test_the_delays_travel_in_config_json_and_are_checked() -> None:
    delays = {"upload_delay_s": 0.5, "create_reply_delay_s": 1, "content_delay_s": 2.5}
    cfg = SimConfig.from_dict({"batches": delays})
    assert (cfg.batches.upload_delay_s, cfg.batches.create_reply_delay_s) == (0.5, 1)
    assert cfg.batches.content_delay_s == 2.5 and cfg.batches.seconds(10) == 10
    assert SimConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for name in delays:
        for bad in (-0.1, "1", True):
            with pytest.raises(ConfigError, match=name):
                SimConfig.from_dict({"batches": {name: bad}})
