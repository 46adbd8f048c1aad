"""The simulator's /v1/completions and /v1/embeddings, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from squall.operations.embeddings import parse_pack
from squall.simulator import (
    SimConfig,
    SimKey,
    Simulator,
    expected_answer,
    expected_embedding,
    prompt_digest,
)
from squall.testing import FakeClock

KEY = "sk-test-aaaaaaaaaaaa1111"
Factory = Callable[..., Simulator]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(
    session: aiohttp.ClientSession, sim: Simulator, path: str, body: Any, key: str | None = KEY
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers["Content-Type"] = "application/json"
    async with session.post(sim.base_url + path, data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.json()


def tokens(*texts: str) -> int:
    return sum(math.ceil(len(t) / 4) + 4 for t in texts)


# --- /v1/completions -----------------------------------------------------------------------


async def test_completions_answer_each_prompt_n_times(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),)))
    status, _, data = await post(session, sim, "/completions", {"model": "m", "prompt": "2 + 3"})
    assert status == 200
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert data["choices"] == [{"text": "5", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert data["usage"] == {
        "prompt_tokens": tokens("2 + 3"),
        "completion_tokens": 1,
        "total_tokens": tokens("2 + 3") + 1,
    }

    body = {"model": "m", "prompt": ["1 + 1", "hello"], "n": 2, "echo": True, "suffix": "."}
    status, _, data = await post(session, sim, "/completions", body)
    texts = [(c["index"], c["text"]) for c in data["choices"]]
    hello = "hello" + expected_answer("hello")
    assert texts == [(0, "1 + 12"), (1, "1 + 12"), (2, hello), (3, hello)]
    entry = sim.ledger()[-1]
    assert entry.inputs == 2 and entry.prompt_sha256 == prompt_digest("1 + 1\nhello")
    assert sim.ledger()[0].prompt_sha256 == prompt_digest("2 + 3")


async def test_completions_truncate_at_max_tokens_and_give_logprobs(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator()
    body = {"model": "m", "prompt": "no numbers", "max_tokens": 2, "logprobs": 1}
    _, _, data = await post(session, sim, "/completions", body)
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["text"] == expected_answer("no numbers")[:8]
    assert choice["logprobs"]["tokens"] == [choice["text"][:4], choice["text"][4:]]
    assert choice["logprobs"]["top_logprobs"][0] == {choice["text"][:4]: -0.01}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{", "could not parse"),
        ({"prompt": "x"}, "model"),
        ({"model": "m"}, "'prompt' must be"),
        ({"model": "m", "prompt": [1, 2]}, "'prompt' must be"),
        ({"model": "m", "prompt": "x", "n": 0}, "n must be"),
        ({"model": "m", "prompt": "x", "logprobs": 9}, "logprobs must be"),
        ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens must be"),
        ({"model": "m", "prompt": "x", "suffix": 3}, "suffix must be"),
        ({"model": "m", "prompt": "x", "stream": True}, "does not stream"),
    ],
)
async def test_completions_refuse_bad_bodies(
    simulator: Factory, session: aiohttp.ClientSession, body: Any, problem: str
) -> None:
    sim = simulator()
    status, _, data = await post(session, sim, "/completions", body)
    assert status == 400 and problem in data["error"]["message"]
    assert sim.ledger()[0].fault == "bad_body"


# --- /v1/embeddings ------------------------------------------------------------------------


async def test_embeddings_give_each_text_its_vector_shuffled(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator()
    texts = [f"text number {i}" for i in range(20)]
    body = {"model": "e", "input": texts, "dimensions": 12}
    status, _, data = await post(session, sim, "/embeddings", body)
    assert status == 200 and data["object"] == "list" and data["model"] == "e"
    indexes = [d["index"] for d in data["data"]]
    assert sorted(indexes) == list(range(20)) and indexes != list(range(20))
    for item in data["data"]:
        vector = item["embedding"]
        assert vector == expected_embedding(texts[item["index"]], 12)
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert data["usage"] == {"prompt_tokens": tokens(*texts), "total_tokens": tokens(*texts)}
    # squall's own reader matches them back by index.
    rows = parse_pack(json.dumps(data).encode(), [1] * 20, str, dimensions=12)
    assert [r.vector for r in rows] == [expected_embedding(t, 12) for t in texts]
    entry = sim.ledger()[0]
    assert entry.inputs == 20 and entry.served


async def test_embeddings_of_one_text_default_dimensions_and_base64(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator()
    status, _, data = await post(session, sim, "/embeddings", {"model": "e", "input": "solo"})
    assert status == 200 and len(data["data"]) == 1
    assert data["data"][0]["embedding"] == expected_embedding("solo", 64)
    assert sim.ledger()[0].inputs == 1 and sim.ledger()[0].prompt_sha256 == prompt_digest("solo")
    body = {"model": "e", "input": ["a", "b"], "dimensions": 5, "encoding_format": "base64"}
    _, _, data = await post(session, sim, "/embeddings", body)
    for item in data["data"]:
        raw = base64.b64decode(item["embedding"])
        vector = list(struct.unpack("<5f", raw))
        assert vector == expected_embedding(["a", "b"][item["index"]], 5)
    assert expected_embedding("a", 5) != expected_embedding("b", 5)
    assert expected_embedding("a", 5) == expected_embedding("a", 5)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"model": "e"}, "'input' must be"),
        ({"model": "e", "input": []}, "'input' must be"),
        ({"model": "e", "input": ["ok", ""]}, "empty string"),
        ({"model": "e", "input": ["x"] * 2049}, "at most 2048"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions must be"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"input": "x"}, "model"),
    ],
)
async def test_embeddings_refuse_bad_bodies(
    simulator: Factory, session: aiohttp.ClientSession, body: Any, problem: str
) -> None:
    sim = simulator()
    status, _, data = await post(session, sim, "/embeddings", body)
    assert status == 400 and problem in data["error"]["message"]


async def test_a_bad_row_refuses_its_whole_pack(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator()
    body = {"model": "e", "input": ["fine", "SQUALL_BAD_REQUEST here", "also fine"]}
    status, _, _ = await post(session, sim, "/embeddings", body)
    assert status == 400 and sim.ledger()[0].fault == "bad_request"
    assert (await post(session, sim, "/embeddings", {**body, "input": ["fine"]}))[0] == 200


# --- keys and limits, the same for every kind ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completions", {"model": "m", "prompt": "p"}),
        ("/embeddings", {"model": "m", "input": ["p", "q"]}),
    ],
)
async def test_unknown_keys_get_401(
    simulator: Factory, session: aiohttp.ClientSession, path: str, body: Any
) -> None:
    sim = simulator(SimConfig(keys=(SimKey(key=KEY),)))
    status, _, data = await post(session, sim, path, body, key="sk-nope-eeeeeeeeeeee5555")
    assert status == 401 and data["error"]["code"] == "invalid_api_key"
    assert (await post(session, sim, path, body, key=None))[0] == 401
    assert [(e.status, e.fault) for e in sim.ledger()] == [(401, "auth"), (401, "auth")]
    assert sim.ledger()[0].inputs == (2 if path == "/embeddings" else 1)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completions", {"model": "m", "prompt": "p"}),
        ("/embeddings", {"model": "m", "input": ["p"] * 50}),
    ],
)
async def test_a_request_counts_once_against_the_rpm_limit(
    simulator: Factory, session: aiohttp.ClientSession, path: str, body: Any
) -> None:
    clock = FakeClock()
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, rpm=120),)), clock=clock)  # bucket of 2
    statuses = [(await post(session, sim, path, body))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, data = await post(session, sim, path, body)
    assert status == 429 and headers["Retry-After"] == "1"
    assert data["error"]["type"] == "requests"
    clock.advance(0.5)
    assert (await post(session, sim, path, body))[0] == 200


async def test_a_packs_tokens_all_count_against_the_tpm_limit(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sim = simulator(SimConfig(keys=(SimKey(key=KEY, tpm=600),)), clock=clock)  # bucket of 10
    body = {"model": "e", "input": ["abcd"] * 3}  # 3 * 5 tokens: passes, leaves a debt of 5
    assert (await post(session, sim, "/embeddings", body))[0] == 200
    status, headers, data = await post(session, sim, "/embeddings", {**body, "input": "x"})
    assert status == 429 and data["error"]["type"] == "tokens" and "Retry-After" in headers
    clock.advance(2)  # 20 tokens refilled: the debt paid, 10 in the bucket again
    assert (await post(session, sim, "/embeddings", {**body, "input": "x"}))[0] == 200
    assert [e.inputs for e in sim.ledger()] == [3, 1, 1]


async def test_a_malformed_embeddings_answer_has_no_data(
    simulator: Factory, session: aiohttp.ClientSession
) -> None:
    sim = simulator(SimConfig(p_malformed=1.0, malformed_shape="no_choices"))
    status, _, data = await post(session, sim, "/embeddings", {"model": "e", "input": ["a"]})
    assert status == 200 and "data" not in data and "usage" in data
    assert [(e.served, e.fault) for e in sim.ledger()] == [(False, "malformed")]
