"""The OpenAI Batch API format: request lines checked and read, output lines written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from squall import openai_batch
from squall.errors import InputError
from squall.operations import CHAT
from squall.records import ErrorInfo, Row, RowResult, RowState


def line(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    data.update(overrides)
    return data


def test_a_batch_line_has_custom_id_url_and_body() -> None:
    assert openai_batch.is_batch_line(line())
    assert openai_batch.is_batch_line({"custom_id": "a", "url": "u", "body": {}})
    assert not openai_batch.is_batch_line({"prompt": "hi", "url": "u"})


def test_check_line_accepts_a_good_line_and_names_the_faulty_field() -> None:
    openai_batch.check_line(Row(0, 1, line()), "b.jsonl")
    openai_batch.check_line(Row(0, 1, {k: v for k, v in line().items() if k != "method"}), "b")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"custom_id": ""}, "custom_id"),
        ({"custom_id": 7}, "custom_id"),
        ({"method": "GET"}, "method"),
        ({"body": "text"}, "body"),
    ]
    for overrides, field in cases:
        with pytest.raises(InputError) as info:
            openai_batch.check_line(Row(0, 3, line(**overrides)), "b.jsonl")
        assert info.value.field == field and info.value.line == 3
    missing = line()
    del missing["url"]
    with pytest.raises(InputError, match="is not an OpenAI batch request") as info:
        openai_batch.check_line(Row(0, 2, missing), "b.jsonl")
    assert info.value.field == "url"


def test_request_body_puts_the_lines_fields_over_the_runs_and_takes_out_the_model() -> None:
    row = Row(0, 1, line(body={"model": "m", "messages": [], "max_tokens": 5}))
    body, model = openai_batch.request_body(
        row, CHAT, {"max_tokens": 64, "temperature": 0}, "b.jsonl"
    )
    assert model == "m"
    assert body == {"max_tokens": 5, "temperature": 0, "messages": []}
    assert row.data["body"]["model"] == "m"  # the row itself is left as read
    _, none = openai_batch.request_body(Row(0, 1, line(body={"messages": []})), CHAT, {}, "b")
    assert none is None


def test_request_body_refuses_other_urls_bodies_and_models() -> None:
    with pytest.raises(
        InputError, match=r"url is '/v1/moderations'; squall sends only /v1/chat/completions"
    ) as info:
        openai_batch.request_body(Row(0, 2, line(url="/v1/moderations")), CHAT, {}, "b.jsonl")
    assert info.value.field == "url"
    with pytest.raises(InputError, match="body must be a JSON object"):
        openai_batch.request_body(Row(0, 2, line(body=[1])), CHAT, {}, "b.jsonl")
    with pytest.raises(InputError, match=r"body\.model must be a string"):
        openai_batch.request_body(Row(0, 2, line(body={"model": 3})), CHAT, {}, "b.jsonl")


def test_the_line_model_and_custom_id_are_read_when_text() -> None:
    assert openai_batch.line_model(line()) == "m"
    assert openai_batch.line_model(line(body={"model": ""})) is None
    assert openai_batch.line_model(line(body="x")) is None
    assert openai_batch.custom_id_of(line()) == "r1"
    assert openai_batch.custom_id_of(line(custom_id=5)) is None


def test_an_unanswered_line_is_not_completed() -> None:
    row = Row(0, 1, line())
    for result in (None, RowResult(index=0, state=RowState.SENT)):
        out = openai_batch.output_line(row, result, CHAT)
        assert out["response"] is None and out["error"]["code"] == "not_completed"
        assert out["custom_id"] == "r1" and out["id"].startswith("batch_req_")


def test_ids_are_stable_and_differ_per_line() -> None:
    a = openai_batch.output_line(Row(0, 1, line()), None, CHAT)["id"]
    assert a == openai_batch.output_line(Row(0, 1, line()), None, CHAT)["id"]
    assert a != openai_batch.output_line(Row(1, 2, line()), None, CHAT)["id"]


def test_an_answer_keeps_its_raw_body_and_request_id() -> None:
    raw = {"id": "chatcmpl-9", "object": "chat.completion", "choices": [], "model": "m"}
    result = RowResult(index=0, state=RowState.DONE, response="x", raw=json.dumps(raw))
    out = openai_batch.output_line(Row(0, 1, line()), result, CHAT)
    assert out["error"] is None
    assert out["response"] == {"status_code": 200, "request_id": "chatcmpl-9", "body": raw}


def test_an_answer_without_a_raw_body_is_rebuilt_by_the_operation() -> None:
    result = RowResult(index=0, state=RowState.DONE, response="4", raw="not json")
    out = openai_batch.output_line(Row(0, 1, line()), result, CHAT)
    assert out["response"]["body"] == CHAT.rebuild_body(result)
    assert out["response"]["request_id"] == out["id"].replace("batch_req_", "req_")


def test_a_failure_gives_its_error_and_a_response_when_it_had_a_status() -> None:
    error = ErrorInfo(type="bad_request", status=400, message="too long")
    failed = RowResult(index=0, state=RowState.FAILED, error=error)
    out = openai_batch.output_line(Row(0, 1, line()), failed, CHAT)
    assert out["error"] == {"code": "bad_request", "message": "too long"}
    assert out["response"]["status_code"] == 400
    assert out["response"]["body"]["error"]["message"] == "too long"
    lost = ErrorInfo(type="connection_lost", status=None, message="reset")
    out = openai_batch.output_line(
        Row(0, 1, line()), RowResult(index=0, state=RowState.FAILED, error=lost), CHAT
    )
    assert out["response"] is None and out["error"]["code"] == "connection_lost"
