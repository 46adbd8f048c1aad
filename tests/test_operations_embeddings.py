"""The embeddings operation: rows built and packed, answers matched by index, usage shared."""

from __future__ import annotations

import json
import random
import struct
from typing import Any

import pytest

from squall.errors import ConfigError, InputError, MalformedResponse
from squall.operations import EMBEDDINGS, RequestSettings, for_batch_url, operation, packing
from squall.operations.embeddings import (
    MAX_INPUTS,
    EmbeddedRow,
    EmbeddingsOperation,
    apportion,
    decode_base64,
    encode_base64,
    pack,
    pack_body,
    parse_pack,
    spec_key,
    split,
)
from squall.records import ErrorInfo, RequestSpec, Row, RowResult, RowState
from squall.tokens import estimate_text_tokens

SETTINGS = RequestSettings(system=None, extras={"dimensions": 4}, source_name="in.jsonl")
OP = EmbeddingsOperation()


def redact(text: str) -> str:
    return text.replace("sk-secret", "sk-...")


def spec(i: int, tokens: int, model: str | None = None, **body: Any) -> RequestSpec:
    return RequestSpec(
        index=i, line=i + 1, body={"input": f"t{i}", **body}, est_prompt_tokens=tokens, model=model
    )


def answer(
    vectors: list[Any], *, usage: int | None = None, order: list[int] | None = None
) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    if order is not None:
        data = [data[i] for i in order]
    body: dict[str, Any] = {"object": "list", "data": data}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage, "total_tokens": usage}
    return json.dumps(body).encode()


def test_the_registry_names_embeddings_a_packed_operation() -> None:
    assert operation("embeddings") is EMBEDDINGS
    assert EMBEDDINGS.path == "/embeddings"
    assert for_batch_url("/v1/embeddings") is EMBEDDINGS
    assert packing(EMBEDDINGS) is EMBEDDINGS
    assert (EMBEDDINGS.max_inputs, EMBEDDINGS.max_tokens) == (512, 100_000)
    with pytest.raises(ConfigError, match="max_inputs must be 1 to 2048"):
        EmbeddingsOperation(max_inputs=MAX_INPUTS + 1)
    with pytest.raises(ConfigError, match="max_tokens must be at least 1"):
        EmbeddingsOperation(max_tokens=0)


# --- build ---------------------------------------------------------------------------------


def test_build_takes_the_template_then_input_then_prompt() -> None:
    row = Row(0, 1, {"input": "i", "prompt": "p"})
    assert OP.build(row, "t", SETTINGS) == {"input": "t", "dimensions": 4}
    assert OP.build(row, None, SETTINGS) == {"input": "i", "dimensions": 4}
    assert OP.build(Row(0, 1, {"prompt": "p"}), None, SETTINGS)["input"] == "p"


def test_build_refuses_rows_without_text() -> None:
    with pytest.raises(InputError, match="has no text to embed") as info:
        OP.build(Row(0, 4, {"q": "x"}), None, SETTINGS)
    assert info.value.line == 4
    with pytest.raises(InputError, match="input is empty") as info:
        OP.build(Row(0, 1, {"input": ""}), None, SETTINGS)
    assert info.value.field == "input"
    with pytest.raises(InputError, match="prompt is null"):
        OP.build(Row(0, 1, {"prompt": None}), None, SETTINGS)


@pytest.mark.parametrize(
    ("system", "extras", "match"),
    [
        ("sys", {}, "no system prompt"),
        (None, {"max_tokens": 5}, "no max_tokens"),
        (None, {"temperature": 0}, "no temperature"),
        (None, {"encoding_format": "int8"}, "encoding_format is 'int8'"),
        (None, {"dimensions": 0}, "dimensions is 0"),
    ],
)
def test_build_refuses_settings_embeddings_cannot_use(
    system: str | None, extras: dict[str, Any], match: str
) -> None:
    settings = RequestSettings(system=system, extras=extras, source_name="x")
    with pytest.raises(ConfigError, match=match):
        OP.build(Row(0, 1, {"input": "x"}), None, settings)


def test_build_batch_wants_one_text_per_line() -> None:
    body = {"input": "x", "dimensions": 8}
    assert OP.build_batch(Row(0, 2, {}), body, SETTINGS) == body
    for bad, what in (
        (["a", "b"], "an input that is a list"),
        (None, "no input"),
        ("  ", "an empty input"),
    ):
        with pytest.raises(InputError, match=f"body has {what}") as info:
            OP.build_batch(Row(0, 2, {}), {"input": bad}, SETTINGS)
        assert info.value.field == "body.input"
    with pytest.raises(ConfigError, match="encoding_format"):
        OP.build_batch(Row(0, 2, {}), {"input": "x", "encoding_format": "hex"}, SETTINGS)


def test_the_estimate_is_the_inputs_text() -> None:
    assert OP.estimate_tokens({"input": "hello there"}) == estimate_text_tokens("hello there")
    assert OP.estimate_tokens({"input": ["abcd", "abcdefgh"]}) == 3


# --- packing -------------------------------------------------------------------------------


def test_pack_closes_at_the_count() -> None:
    packs = list(pack((spec(i, 1) for i in range(7)), max_inputs=3))
    assert [[s.index for s in p] for p in packs] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(pack([], max_inputs=3)) == []


def test_pack_closes_before_the_token_budget_and_sends_a_big_row_alone() -> None:
    tokens = [40, 50, 20, 150, 10, 90, 5]
    packs = list(pack([spec(i, t) for i, t in enumerate(tokens)], max_tokens=100))
    assert [[s.index for s in p] for p in packs] == [[0, 1], [2], [3], [4, 5], [6]]
    assert all(sum(s.est_prompt_tokens for s in p) <= 100 for p in packs if len(p) > 1)


def test_pack_keeps_different_models_and_settings_apart() -> None:
    specs = [
        spec(0, 1, "a"),
        spec(1, 1, "a"),
        spec(2, 1, "b"),
        spec(3, 1, "b", dimensions=8),
        spec(4, 1, "b", dimensions=8),
    ]
    packs = list(pack(specs, key=spec_key))
    assert [[s.index for s in p] for p in packs] == [[0, 1], [2], [3, 4]]
    assert [[s.index for s in p] for p in OP.pack(specs)] == [[0, 1, 2, 3, 4]]


def test_pack_body_lists_the_inputs_in_order_with_the_settings_once() -> None:
    bodies = [{"input": "a", "dimensions": 4}, {"input": "b", "dimensions": 4}]
    assert pack_body(bodies) == {"input": ["a", "b"], "dimensions": 4}
    assert OP.pack_body(bodies[:1]) == {"input": ["a"], "dimensions": 4}
    with pytest.raises(ValueError, match="at least one"):
        pack_body([])


def test_split_halves_until_the_bad_row_is_alone() -> None:
    assert split([1, 2, 3, 4, 5]) == ([1, 2, 3], [4, 5])
    assert split([1, 2]) == ([1], [2])
    with pytest.raises(ValueError, match="cannot be split"):
        split([1])
    # Bisecting a pack of 64 with one bad row: at most 2 * log2(64) requests more.
    todo, sent, bad = [list(range(64))], 0, 37
    while todo:
        group = todo.pop()
        sent += 1
        if bad in group and len(group) > 1:
            todo.extend(split(group))
    assert sent <= 1 + 2 * 6


# --- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weights", "expected"),
    [
        (10, [1, 1], [5, 5]),
        (10, [1, 1, 1], [4, 3, 3]),
        (7, [0, 0], [4, 3]),
        (9, [3, 0, 6], [3, 0, 6]),
        (0, [5, 5], [0, 0]),
        (5, [], []),
        (100, [1, 2, 3, 4], [10, 20, 30, 40]),
        (11, [2, 1, -3], [7, 4, 0]),
    ],
)
def test_apportion_is_proportional_and_exact(
    total: int, weights: list[int], expected: list[int]
) -> None:
    assert apportion(total, weights) == expected


def test_apportion_always_sums_to_the_total() -> None:
    rng = random.Random(5)
    for _ in range(500):
        weights = [rng.randint(0, 300) for _ in range(rng.randint(1, 40))]
        total = rng.randint(0, 50_000)
        shares = apportion(total, weights)
        assert sum(shares) == total and all(s >= 0 for s in shares)
        whole = sum(weights) or len(weights)
        ws = weights if sum(weights) else [1] * len(weights)
        assert all(abs(s - total * w / whole) < 1 for s, w in zip(shares, ws, strict=True))


# --- answers -------------------------------------------------------------------------------


def test_parse_pack_matches_by_index_not_by_order() -> None:
    vectors = [[float(i), -float(i)] for i in range(6)]
    order = [3, 0, 5, 1, 4, 2]
    rows = parse_pack(answer(vectors, usage=60, order=order), [10] * 6, redact)
    assert [r.vector for r in rows] == vectors
    assert [r.prompt_tokens for r in rows] == [10] * 6
    rows = OP.parse_pack(answer(vectors[:2], usage=9), [1, 2], redact)
    assert [r.prompt_tokens for r in rows] == [3, 6]
    assert all(r.prompt_tokens is None for r in parse_pack(answer(vectors), [1] * 6, redact))


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ([0, 1], "missing index 2"),
        ([0, 1, 1, 2], "index given twice 1"),
        ([0, 1, 2, 3], "unexpected index 3"),
        ([0, 2, "1"], "missing index 1; unexpected index '1'"),
    ],
)
def test_parse_pack_refuses_indexes_that_do_not_cover_the_pack(
    indexes: list[Any], message: str
) -> None:
    body = {"data": [{"index": i, "embedding": [0.5]} for i in indexes]}
    with pytest.raises(MalformedResponse, match="does not match the 3 inputs sent") as info:
        parse_pack(json.dumps(body).encode(), [1, 1, 1], redact)
    assert message in info.value.message and info.value.status == 200


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{nope", "not an embeddings list"),
        (b'{"data": {}}', "data is not a list"),
        (b'{"data": [1]}', "not an object"),
        (b'{"data": [{"index": 0, "embedding": 5}]}', "is a int, not a list or base64"),
        (b'{"data": [{"index": 0, "embedding": "@@"}]}', "is not base64 float32"),
        (b'{"data": [{"index": 0, "embedding": "AAA="}]}', "not a whole number of float32s"),
        (b'{"sk-secret": 1}', "not an embeddings list"),
    ],
)
def test_parse_pack_calls_other_bodies_malformed(body: bytes, match: str) -> None:
    with pytest.raises(MalformedResponse, match=match) as info:
        parse_pack(body, [1], redact)
    assert "sk-secret" not in info.value.message


def test_parse_pack_checks_the_dimensions_asked_for() -> None:
    raw = answer([[0.1, 0.2], [0.3, 0.4]])
    assert len(parse_pack(raw, [1, 1], redact, dimensions=2)) == 2
    with pytest.raises(MalformedResponse, match="index 0 has 2 dimensions, not the 3"):
        parse_pack(raw, [1, 1], redact, dimensions=3)
    with pytest.raises(MalformedResponse, match="not the 4 asked for"):
        OP.parse_pack(raw, [1, 1], redact, dimensions=4)


def test_base64_round_trips_little_endian_float32() -> None:
    vector = [0.0, 1.0, -0.5, 0.1, 3.0e-8, -123.25]
    text = encode_base64(vector)
    assert decode_base64(text) == [struct.unpack("<f", struct.pack("<f", v))[0] for v in vector]
    assert decode_base64(encode_base64([0.25, -2.0])) == [0.25, -2.0]
    assert struct.unpack("<2f", __import__("base64").b64decode(encode_base64([0.25, -2.0]))) == (
        0.25,
        -2.0,
    )
    rows = parse_pack(answer([text, [0.5]], order=[1, 0]), [1, 1], redact)
    assert rows[0].vector == decode_base64(text) and rows[1].vector == [0.5]
    with pytest.raises(ValueError, match="not base64"):
        decode_base64("!!!")


def test_a_row_is_journaled_as_json_text_and_written_as_a_list() -> None:
    row = EmbeddedRow([0.25, -1.0], 7)
    done = row.as_completion()
    assert json.loads(done.text or "") == [0.25, -1.0]
    assert (done.prompt_tokens, done.completion_tokens, done.finish_reason) == (7, None, None)
    result = RowResult(
        index=0, state=RowState.DONE, response=done.text, prompt_tokens=7, latency_s=0.123456
    )
    fields = OP.output_fields(result)
    assert tuple(fields) == OP.output_columns
    assert fields["embedding"] == [0.25, -1.0] and fields["latency_s"] == 0.1235
    failed = RowResult(index=0, state=RowState.FAILED, error=ErrorInfo("bad_request", 400, "no"))
    assert OP.output_fields(failed)["embedding"] is None
    assert OP.output_fields(failed)["error"]["status"] == 400
    assert set(OP.output_types) <= set(OP.output_columns)
    rebuilt = OP.rebuild_body(result)
    assert rebuilt["data"] == [{"object": "embedding", "index": 0, "embedding": [0.25, -1.0]}]
    assert rebuilt["usage"] == {"prompt_tokens": 7, "total_tokens": 7}


def test_parse_reads_a_one_input_answer() -> None:
    done = OP.parse(answer([[0.5, 0.5]], usage=3), True, redact)
    assert json.loads(done.text or "") == [0.5, 0.5] and done.prompt_tokens == 3
    assert done.raw is not None
    with pytest.raises(MalformedResponse, match="unexpected index 1"):
        OP.parse(answer([[0.1], [0.2]]), False, redact)
