"""The completions operation: its paths, the body built from a row, the answer read, columns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from squall.errors import ConfigError, ContentFiltered, InputError, MalformedResponse
from squall.operations import COMPLETIONS, RequestSettings, for_batch_url, operation, packing
from squall.operations.completions import CompletionsOperation, extra_fields
from squall.records import OUTPUT_FIELDS, Row, RowResult, RowState
from squall.tokens import estimate_prompt_tokens, estimate_text_tokens

SETTINGS = RequestSettings(system=None, extras={"max_tokens": 8}, source_name="in.jsonl")
OP = CompletionsOperation()


def redact(text: str) -> str:
    return text.replace("sk-secret", "sk-...")


def raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def test_the_registry_names_completions_and_its_urls() -> None:
    assert operation("completions") is COMPLETIONS
    assert COMPLETIONS.path == "/completions"
    assert COMPLETIONS.batch_url == "/v1/completions"
    assert for_batch_url("/v1/completions") is COMPLETIONS
    assert packing(COMPLETIONS) is None
    assert "prompt" in COMPLETIONS.reserved_params


def test_build_takes_the_template_then_the_prompt() -> None:
    row = Row(0, 1, {"prompt": "p", "q": "x"})
    assert OP.build(row, "t", SETTINGS) == {"prompt": "t", "max_tokens": 8}
    assert OP.build(row, None, SETTINGS) == {"prompt": "p", "max_tokens": 8}
    extras = {"logprobs": 2, "echo": True, "suffix": "!", "n": 3}
    settings = RequestSettings(system=None, extras=extras, source_name="x")
    assert OP.build(row, None, settings) == {"prompt": "p", **extras}


def test_build_refuses_rows_without_a_usable_prompt_and_system_prompts() -> None:
    with pytest.raises(InputError, match="has no prompt") as info:
        OP.build(Row(0, 3, {"question": "q"}), None, SETTINGS)
    assert info.value.line == 3 and "question" in str(info.value)
    with pytest.raises(InputError, match="prompt is empty"):
        OP.build(Row(0, 1, {"prompt": " "}), None, SETTINGS)
    with pytest.raises(InputError, match="prompt is a int"):
        OP.build(Row(0, 1, {"prompt": 4}), None, SETTINGS)
    system = RequestSettings(system="be brief", extras={}, source_name="x")
    with pytest.raises(ConfigError, match="no system prompt"):
        OP.build(Row(0, 1, {"prompt": "p"}), None, system)


def test_build_batch_checks_the_prompt() -> None:
    body = {"prompt": ["a", "b"], "max_tokens": 3}
    assert OP.build_batch(Row(0, 2, {}), body, SETTINGS) == body
    assert OP.build_batch(Row(0, 2, {}), {"prompt": [1, 2]}, SETTINGS) == {"prompt": [1, 2]}
    with pytest.raises(InputError, match="body has no prompt") as info:
        OP.build_batch(Row(0, 2, {}), {"max_tokens": 3}, SETTINGS)
    assert info.value.field == "body.prompt"
    with pytest.raises(InputError, match="a prompt that is a dict"):
        OP.build_batch(Row(0, 2, {}), {"prompt": {"x": 1}}, SETTINGS)


def test_the_estimate_counts_prompt_and_suffix_without_chat_framing() -> None:
    body = {"prompt": "hello there, how are you", "suffix": "bye now"}
    assert OP.estimate_tokens(body) == estimate_text_tokens(body["prompt"]) + 2
    assert estimate_prompt_tokens(["abcd", "efgh"]) == 2
    assert estimate_prompt_tokens([1, 2, 3]) == 3
    assert estimate_prompt_tokens([[1, 2], "abcd"]) == 3
    assert estimate_prompt_tokens(None) == 0


def test_parse_reads_text_finish_usage_and_id() -> None:
    done = OP.parse(
        raw(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "choices": [{"text": " 4", "index": 0, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            }
        ),
        False,
        redact,
    )
    assert (done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens) == (
        " 4",
        "stop",
        5,
        1,
    )
    assert done.request_id == "cmpl-1" and done.raw is None
    kept = OP.parse(raw({"choices": [{"text": "x"}]}), True, redact)
    assert kept.raw is not None and kept.prompt_tokens is None


@pytest.mark.parametrize("body", [b"{nope", b'{"choices": []}', b"[1]", b'{"choices": [3]}'])
def test_parse_calls_other_bodies_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponse) as info:
        OP.parse(body, False, redact)
    assert info.value.status == 200


def test_a_malformed_snippet_is_redacted_and_a_filtered_answer_is_content_filtered() -> None:
    with pytest.raises(MalformedResponse) as info:
        OP.parse(b'{"key": "sk-secret"}', False, redact)
    assert "not a text completion" in info.value.message and "sk-secret" not in info.value.message
    with pytest.raises(ContentFiltered):
        OP.parse(raw({"choices": [{"text": "", "finish_reason": "content_filter"}]}), False, redact)


def test_with_params_adds_the_columns_asked_for() -> None:
    assert COMPLETIONS.output_columns == OUTPUT_FIELDS
    assert OP.with_params({"echo": True, "suffix": "x", "n": 1}) is OP
    lp = OP.with_params({"logprobs": 1})
    assert lp.output_columns == (*OUTPUT_FIELDS, "logprobs")
    both = OP.with_params({"logprobs": 0, "n": 2})
    assert both.output_columns == (*OUTPUT_FIELDS, "logprobs", "choices")
    assert both.with_params({"n": 2, "logprobs": 5}) is both
    assert OP.with_params({"n": 3}).output_columns == (*OUTPUT_FIELDS, "choices")
    with pytest.raises(ValueError, match="unknown completions columns"):
        CompletionsOperation(("nope",))


def test_extra_columns_are_read_from_the_raw_body_it_keeps() -> None:
    op = OP.with_params({"logprobs": 1, "n": 2})
    logprobs = {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": None}
    body = {
        "choices": [
            {"text": "second", "index": 1, "finish_reason": "stop", "logprobs": None},
            {"text": "first", "index": 0, "finish_reason": "stop", "logprobs": logprobs},
        ]
    }
    done = op.parse(raw(body), False, redact)
    assert done.raw is not None  # kept although keep_raw is False: the columns need it
    result = RowResult(index=0, state=RowState.DONE, response=done.text, raw=done.raw)
    fields = op.output_fields(result)
    assert tuple(fields) == op.output_columns
    assert fields["logprobs"] == logprobs
    assert fields["choices"] == ["first", "second"]
    pending = op.output_fields(RowResult(index=0, state=RowState.PENDING))
    assert pending["logprobs"] is None and pending["choices"] is None
    assert extra_fields("{junk", ("logprobs",)) == {"logprobs": None}
    assert extra_fields('"text"', ("choices",)) == {"choices": None}


def test_rebuild_body_is_a_text_completion() -> None:
    result = RowResult(
        index=0,
        state=RowState.DONE,
        response="4",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=1,
    )
    body = OP.rebuild_body(result)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "4"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert OP.rebuild_body(RowResult(index=0, state=RowState.DONE))["usage"] is None
