"""The chat operation: its paths, the body built from a row, the answer read, its columns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from squall.errors import ConfigError, ContentFiltered, InputError, MalformedResponse
from squall.operations import (
    CHAT,
    RequestSettings,
    batch_urls,
    for_batch_url,
    operation,
    operations,
)
from squall.operations.chat import check_messages
from squall.records import OUTPUT_FIELDS, ErrorInfo, Row, RowResult, RowState
from squall.tokens import estimate_tokens

SETTINGS = RequestSettings(system=None, extras={"max_tokens": 8}, source_name="in.jsonl")


def redact(text: str) -> str:
    return text.replace("sk-secret", "sk-...")


def parse(body: Any, *, keep_raw: bool = False) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CHAT.parse(raw, keep_raw, redact)


def test_the_registry_names_chat_and_its_urls() -> None:
    assert operation("chat") is CHAT
    assert CHAT in operations()
    assert CHAT.path == "/chat/completions"
    assert CHAT.batch_url == "/v1/chat/completions"
    assert batch_urls() == ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
    assert for_batch_url("/v1/chat/completions") is CHAT
    assert for_batch_url("/v1/moderations") is None
    with pytest.raises(
        ConfigError, match="unknown operation 'nope': use one of chat, completions, embeddings"
    ):
        operation("nope")


# --- build ---------------------------------------------------------------------------------


def test_build_takes_the_template_text_then_messages_then_prompt() -> None:
    row = Row(0, 1, {"prompt": "p", "messages": [{"role": "user", "content": "m"}]})
    assert CHAT.build(row, "t", SETTINGS) == {
        "messages": [{"role": "user", "content": "t"}],
        "max_tokens": 8,
    }
    assert CHAT.build(row, None, SETTINGS)["messages"] == [{"role": "user", "content": "m"}]
    prompt_only = Row(1, 2, {"prompt": "p"})
    assert CHAT.build(prompt_only, None, SETTINGS)["messages"] == [{"role": "user", "content": "p"}]


def test_build_puts_the_system_prompt_first_unless_the_row_has_one() -> None:
    settings = RequestSettings(system="be brief", extras={}, source_name="x")
    body = CHAT.build(Row(0, 1, {"prompt": "p"}), None, settings)
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "u"}]
    assert CHAT.build(Row(0, 1, {"messages": own}), None, settings)["messages"] == own


def test_build_reads_messages_written_as_json_text() -> None:
    text = json.dumps([{"role": "user", "content": "from csv"}])
    body = CHAT.build(Row(0, 2, {"messages": text}), None, SETTINGS)
    assert body["messages"][0]["content"] == "from csv"
    with pytest.raises(InputError, match="messages is text that is not JSON"):
        CHAT.build(Row(0, 2, {"messages": "[{"}), None, SETTINGS)


def test_build_refuses_rows_without_a_usable_prompt() -> None:
    with pytest.raises(InputError, match="has no prompt") as info:
        CHAT.build(Row(0, 3, {"question": "q"}), None, SETTINGS)
    assert info.value.line == 3 and "--template '... {question} ...'" in str(info.value)
    with pytest.raises(InputError, match="prompt is a int"):
        CHAT.build(Row(0, 1, {"prompt": 5}), None, SETTINGS)
    with pytest.raises(InputError, match="prompt is empty"):
        CHAT.build(Row(0, 1, {"prompt": "  "}), None, SETTINGS)


def test_build_batch_checks_messages_and_adds_the_system_prompt() -> None:
    settings = RequestSettings(system="sys", extras={}, source_name="b.jsonl")
    body = {"messages": [{"role": "user", "content": "x"}], "temperature": 0}
    built = CHAT.build_batch(Row(0, 4, {}), body, settings)
    assert built["messages"][0] == {"role": "system", "content": "sys"}
    assert built["temperature"] == 0
    with pytest.raises(InputError, match="body has no messages") as info:
        CHAT.build_batch(Row(0, 4, {}), {"temperature": 0}, settings)
    assert info.value.field == "body.messages"
    with pytest.raises(InputError, match=r"role is 'robot'"):
        CHAT.build_batch(Row(0, 4, {}), {"messages": [{"role": "robot", "content": "x"}]}, settings)


def test_check_messages_names_what_is_wrong() -> None:
    with pytest.raises(InputError, match="non-empty list"):
        check_messages([])
    with pytest.raises(InputError, match="has no content"):
        check_messages([{"role": "user"}])
    calls = [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
    assert check_messages(calls) == calls


def test_the_estimate_is_the_messages_estimate() -> None:
    body = CHAT.build(Row(0, 1, {"prompt": "hello there, how are you"}), None, SETTINGS)
    assert CHAT.estimate_tokens(body) == estimate_tokens(body["messages"])


# --- parse ---------------------------------------------------------------------------------


def test_parse_reads_text_finish_usage_and_id() -> None:
    done = parse(
        {
            "id": "chatcmpl-1",
            "choices": [{"message": {"content": "4"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1},
        },
        keep_raw=True,
    )
    assert (done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens) == (
        "4",
        "stop",
        9,
        1,
    )
    assert done.request_id == "chatcmpl-1" and done.raw is not None and '"4"' in done.raw
    assert parse({"choices": [{"message": {"content": "x"}}]}).raw is None


def test_parse_tolerates_odd_usage_ids_and_legacy_text() -> None:
    odd = parse({"choices": [{"message": {"content": "hi"}}], "usage": "lots", "id": 5})
    assert odd.text == "hi" and odd.prompt_tokens is None and odd.request_id is None
    assert parse({"choices": [{"text": "legacy"}], "usage": None}).text == "legacy"
    parts = parse({"choices": [{"message": {"content": [{"type": "text", "text": "p"}]}}]})
    assert parts.text == json.dumps([{"type": "text", "text": "p"}])


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"choices": []}', b'{"nothing": 1}', b"[1, 2]", b'{"choices": ["text"]}'],
)
def test_parse_calls_other_bodies_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedResponse) as info:
        parse(raw)
    assert info.value.status == 200


def test_a_malformed_bodys_snippet_is_redacted() -> None:
    with pytest.raises(MalformedResponse) as info:
        parse(b'{"key": "sk-secret"}')
    assert "not a chat completion" in info.value.message
    assert "sk-secret" not in info.value.message


def test_a_filtered_answer_without_text_is_content_filtered() -> None:
    with pytest.raises(ContentFiltered):
        parse({"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}]})
    partial = parse(
        {"choices": [{"message": {"content": "so"}, "finish_reason": "content_filter"}]}
    )
    assert partial.text == "so" and partial.finish_reason == "content_filter"


# --- output ------------------------------------------------------------------------------


def test_output_columns_and_values_are_squalls_columns() -> None:
    assert CHAT.output_columns == OUTPUT_FIELDS
    assert set(CHAT.output_types) == set(OUTPUT_FIELDS)
    result = RowResult(
        index=0,
        state=RowState.FAILED,
        error=ErrorInfo(type="bad_request", status=400, message="no"),
        latency_s=0.123456,
        attempts=2,
    )
    fields = CHAT.output_fields(result)
    assert tuple(fields) == OUTPUT_FIELDS
    assert fields == result.output_fields()
    assert fields["latency_s"] == 0.1235


def test_rebuild_body_is_a_chat_completion() -> None:
    result = RowResult(
        index=0,
        state=RowState.DONE,
        response="4",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=1,
    )
    body = CHAT.rebuild_body(result)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "4"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert CHAT.rebuild_body(RowResult(index=0, state=RowState.DONE))["usage"] is None
