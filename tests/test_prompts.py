"""Building chat-completion requests from rows, templates and OpenAI batch lines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from squall.errors import ConfigError, InputError, JournalError
from squall.inputs import open_input
from squall.prompts import (
    ROW_FINGERPRINT,
    RequestBuilder,
    check_messages,
    check_template,
    fingerprint,
    fingerprint_v1,
    row_fingerprinter,
    settings_fingerprint,
    template_fields,
)
from squall.records import Row
from squall.tokens import estimate_tokens


def builder(
    template: str | None = None,
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    params: dict[str, Any] | None = None,
) -> RequestBuilder:
    return RequestBuilder(
        template=template,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        params=params or {},
        source_name="in.csv",
    )


def row(data: dict[str, Any], line: int = 2) -> Row:
    return Row(index=line - 2, line=line, data=data)


def batch_data(**body: Any) -> dict[str, Any]:
    return {
        "custom_id": "task-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}], **body},
    }


# --- prompt resolution ---------------------------------------------------------------------


def test_prompt_field_becomes_one_user_message() -> None:
    spec = builder().build(row({"prompt": "你好"}), batch=False)
    assert spec.body == {"messages": [{"role": "user", "content": "你好"}]}
    assert "model" not in spec.body
    assert (spec.index, spec.line, spec.custom_id, spec.model) == (0, 2, None, None)
    assert spec.est_prompt_tokens == estimate_tokens(spec.body["messages"])


def test_cjk_template_fills_fields_from_the_row() -> None:
    spec = builder("计算 {expression} 的结果").build(row({"expression": "3 x 4"}), batch=False)
    assert spec.body["messages"] == [{"role": "user", "content": "计算 3 x 4 的结果"}]


def test_template_wins_over_prompt_and_messages() -> None:
    data = {"prompt": "p", "messages": [{"role": "user", "content": "m"}], "q": "Q"}
    spec = builder("ask {q}").build(row(data), batch=False)
    assert spec.body["messages"] == [{"role": "user", "content": "ask Q"}]


def test_messages_field_is_sent_as_is() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    spec = builder().build(row({"messages": messages, "prompt": "ignored"}), batch=False)
    assert spec.body["messages"] == messages


def test_messages_as_json_text_from_a_csv_cell() -> None:
    cell = json.dumps([{"role": "user", "content": "hi"}])
    spec = builder().build(row({"messages": cell}), batch=False)
    assert spec.body["messages"] == [{"role": "user", "content": "hi"}]


def test_missing_template_field_names_it_and_lists_columns() -> None:
    with pytest.raises(InputError) as info:
        builder("计算 {expr} 的结果").build(row({"expression": "1", "answer": "2"}), batch=False)
    err = info.value
    assert (err.file, err.line, err.field) == ("in.csv", 2, "expr")
    assert str(err).startswith("in.csv, line 2, field 'expr': the template uses {expr}")
    assert "columns: expression, answer" in str(err)


def test_literal_json_braces_in_a_template_suggest_doubling() -> None:
    with pytest.raises(InputError, match=r"double them: \{\{ and \}\}"):
        builder('reply as {"answer": ...} for {q}').build(row({"q": "x"}), batch=False)


def test_no_prompt_lists_columns_and_suggests_template() -> None:
    with pytest.raises(InputError) as info:
        builder().build(row({"expression": "1+1", "answer": "2"}, line=7), batch=False)
    message = str(info.value)
    assert message.startswith("in.csv, line 7: has no prompt")
    assert "(expression, answer)" in message
    assert "--template '... {expression} ...'" in message


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt_is_an_error(prompt: str) -> None:
    with pytest.raises(InputError, match=r"line 2, field 'prompt': prompt is empty"):
        builder().build(row({"prompt": prompt}), batch=False)


def test_prompt_that_is_not_text_is_an_error() -> None:
    with pytest.raises(InputError, match="prompt is null, not text"):
        builder().build(row({"prompt": None}), batch=False)
    with pytest.raises(InputError, match="prompt is a int, not text"):
        builder().build(row({"prompt": 5}), batch=False)


def test_template_giving_whitespace_is_an_error() -> None:
    with pytest.raises(InputError, match="the template gave an empty prompt"):
        builder("{q}").build(row({"q": "  "}), batch=False)


def test_format_spec_on_csv_text_explains_why() -> None:
    with pytest.raises(InputError, match=r"line 2: the template cannot be filled .*CSV values"):
        builder("{x:.2f}").build(row({"x": "1.5"}), batch=False)
    spec = builder("{x:.2f}").build(row({"x": 1.5}), batch=False)
    assert spec.body["messages"][0]["content"] == "1.50"


@pytest.mark.parametrize(
    ("messages", "field", "match"),
    [
        ([], "messages", "non-empty list"),
        ("not json", "messages", "not JSON"),
        ([{"role": "robot", "content": "x"}], "messages[0]", "role is 'robot'"),
        ([{"role": "user", "content": "ok"}, "hi"], "messages[1]", "must be an object"),
        ([{"role": "user"}], "messages[0]", "has no content"),
        ([{"role": "user", "content": 5}], "messages[0]", "content is a int"),
        ([{"role": "user", "content": " "}], "messages[0]", "content is empty"),
    ],
)
def test_bad_messages_name_the_message(messages: Any, field: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        builder().build(row({"messages": messages}), batch=False)
    assert (info.value.line, info.value.field) == (2, field)


def test_assistant_tool_call_without_content_is_valid() -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
    ]
    assert check_messages(messages) is messages


# --- settings in the body ------------------------------------------------------------------


def test_system_is_prepended_unless_messages_start_with_one() -> None:
    b = builder(system="你是计算器")
    spec = b.build(row({"prompt": "1+1"}), batch=False)
    assert spec.body["messages"][0] == {"role": "system", "content": "你是计算器"}
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "x"}]
    assert b.build(row({"messages": own}), batch=False).body["messages"] == own


def test_max_tokens_temperature_and_params_go_in_the_body() -> None:
    b = builder(max_tokens=64, temperature=0.0, params={"top_p": 0.9, "max_tokens": 1})
    body = b.build(row({"prompt": "x"}), batch=False).body
    assert body["max_tokens"] == 64 and body["temperature"] == 0.0 and body["top_p"] == 0.9
    assert "temperature" not in builder().build(row({"prompt": "x"}), batch=False).body


@pytest.mark.parametrize("key", ["model", "messages"])
def test_params_may_not_set_model_or_messages(key: str) -> None:
    with pytest.raises(ConfigError, match=f"params may not set '{key}'"):
        builder(params={key: "x"})


@pytest.mark.parametrize("template", ["{", "a } b", "{}", "{0}"])
def test_malformed_template_is_a_config_error(template: str) -> None:
    with pytest.raises(ConfigError, match="double it"):
        builder(template)


# --- OpenAI batch lines --------------------------------------------------------------------


def test_batch_line_keeps_its_body_and_model_and_custom_id() -> None:
    b = builder(system="sys", max_tokens=64, temperature=0.5)
    spec = b.build(row(batch_data(temperature=0.1)), batch=True)
    assert spec.model == "gpt-x" and spec.custom_id == "task-1"
    assert "model" not in spec.body
    assert spec.body["temperature"] == 0.1  # the line's own value wins
    assert spec.body["max_tokens"] == 64
    assert spec.body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


def test_batch_line_is_not_mutated() -> None:
    data = batch_data()
    before = json.dumps(data, sort_keys=True)
    builder(system="s").build(row(data), batch=True)
    assert json.dumps(data, sort_keys=True) == before


def test_batch_line_for_another_endpoint_is_an_error() -> None:
    data = {**batch_data(), "url": "/v1/embeddings"}
    with pytest.raises(InputError, match=r"line 2, field 'url': url is '/v1/embeddings'"):
        builder().build(row(data), batch=True)


def test_batch_body_without_messages_is_an_error() -> None:
    data = batch_data()
    data["body"] = {"model": "m", "input": "x"}
    with pytest.raises(InputError, match=r"field 'body.messages': body has no messages"):
        builder().build(row(data), batch=True)
    data["body"] = {"messages": []}
    with pytest.raises(InputError, match=r"field 'body.messages': must be a non-empty list"):
        builder().build(row(data), batch=True)


def test_batch_file_round_trip_through_inputs(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    lines = [{**batch_data(), "custom_id": f"r{i}"} for i in range(3)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    source = open_input(path)
    b = RequestBuilder(
        template=None,
        system=None,
        max_tokens=None,
        temperature=None,
        params={},
        source_name=source.name,
    )
    specs = [b.build(r, batch=source.is_batch) for r in source.rows()]
    assert [s.custom_id for s in specs] == ["r0", "r1", "r2"]
    assert [s.line for s in specs] == [1, 2, 3]


# --- templates checked up front ------------------------------------------------------------


def test_check_template_returns_fields_and_names_a_missing_column() -> None:
    assert check_template("计算 {a} {b.x} {a}", ["a", "b"]) == ["a", "b"]
    with pytest.raises(InputError) as info:
        check_template("{expr}", ["expression"], source_name="in.csv", line=2)
    assert str(info.value).startswith("in.csv, line 2, field 'expr': the template uses {expr}")
    assert "columns: expression" in str(info.value)


def test_template_fields_ignores_escaped_braces() -> None:
    assert template_fields('{{"answer": 1}} {q}') == ["q"]


# --- fingerprints --------------------------------------------------------------------------


def test_fingerprint_ignores_key_order_and_sees_changes() -> None:
    a = fingerprint({"prompt": "计算", "n": 1})
    assert a == fingerprint({"n": 1, "prompt": "计算"})
    assert a != fingerprint({"prompt": "计算", "n": 2})
    assert len(a) == 32 and int(a, 16) >= 0
    assert len(fingerprint({1: "x", "a": object()})) == 32  # type: ignore[dict-item]  # mixed keys are the test


def test_fingerprints_are_stable_across_versions() -> None:
    # A journal keeps the hashes it was made with: if a scheme's hash of a row ever changed
    # (a new squall, a new orjson), every resume of an older journal would stop with "the
    # input changed". Scheme 1's values are those squall computed before scheme 2 existed.
    row = {"prompt": "计算 1 + 2", "n": 1, "x": [1.5, None, True], "d": {"b": "é", "a": 2}}
    assert fingerprint_v1(row) == "7be3f0de9d1d60b9eab3d18ea50e44e3"
    assert fingerprint_v1({1: "x", "a": "y"}) == "e84707e3b9c61ad35988ada42c1ea096"  # type: ignore[dict-item]  # mixed keys are the test
    plain = {"prompt": "计算 1 + 2", "n": 1, "x": [1.5, 1e16, 2.5e-7, True], "d": {"b": "é"}}
    assert fingerprint(plain) == "f27d4c6e88a0e4e12e632cdf989da527"
    assert fingerprint({1: "x", "a": "y"}) == "9f7b3542ad2f555553d07025ea516fe7"  # type: ignore[dict-item]  # mixed keys are the test


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": math.nan}, {"x": None}),  # orjson writes both as null
        ({"x": [math.inf]}, {"x": [None]}),
        ({"s": "\ud800"}, {"s": "\ud801"}),  # orjson refuses lone surrogates
        ({"n": 2**70}, {"n": 2**70 + 1}),  # and ints past 64 bits
        ({"n": 1}, {"n": 1.0}),
        ({"n": 1}, {"n": "1"}),
    ],
)
def test_fingerprint_tells_close_rows_apart(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(dict(a))


def test_row_fingerprinter_knows_each_scheme_and_refuses_a_newer_one() -> None:
    assert row_fingerprinter("1") is fingerprint_v1
    assert row_fingerprinter(ROW_FINGERPRINT) is fingerprint
    with pytest.raises(JournalError, match="newer squall"):
        row_fingerprinter("99")


def test_settings_fingerprint_changes_with_any_setting_and_says_what() -> None:
    base: dict[str, Any] = {
        "template": "{q}",
        "system": None,
        "max_tokens": 64,
        "temperature": None,
        "params": {"top_p": 1},
        "model": "m",
    }
    old = settings_fingerprint(**base)
    assert old.digest == settings_fingerprint(**base).digest
    new = settings_fingerprint(**{**base, "max_tokens": 128})
    assert new.digest != old.digest
    assert new.changes_from(old.settings) == ["max_tokens: 64 -> 128"]
    assert json.loads(json.dumps(old.settings)) == old.settings


def test_builder_settings_fingerprint_matches_the_function() -> None:
    b = builder("{q}", system="s", max_tokens=8, temperature=0.2, params={"seed": 1})
    direct = settings_fingerprint(
        template="{q}", system="s", max_tokens=8, temperature=0.2, params={"seed": 1}, model="m"
    )
    assert b.settings_fingerprint("m") == direct


def test_the_builder_delegates_to_the_operation_it_is_given() -> None:
    from squall.operations import CHAT

    assert builder().operation is CHAT
    settings: dict[str, Any] = {
        "template": None,
        "system": None,
        "max_tokens": None,
        "temperature": None,
        "params": {},
        "source_name": "in.jsonl",
    }
    assert RequestBuilder(**settings, operation="chat").operation is CHAT
    with pytest.raises(ConfigError, match="unknown operation 'nope'"):
        RequestBuilder(**settings, operation="nope")
