"""Scorers: strict and lenient arithmetic, and exact|number|contains|regex|json."""

from __future__ import annotations

import pytest

from squall.errors import ConfigError, InputError
from squall.evals.scorers import (
    FactCounts,
    last_integer,
    last_number,
    make_scorer,
    parse_json_answer,
    score_arithmetic,
    score_json,
)


@pytest.mark.parametrize(
    ("answer", "expected", "strict", "lenient"),
    [
        ("42", 42, True, True),
        ("  42\n", 42, True, True),
        ("-22", -22, True, True),
        ("答案是 42。", 42, False, True),
        ("50 - 6 - 66 = -22", -22, False, True),
        ("The answer is -1,234.", -1234, False, True),
        ("1234", -1234, False, False),
        ("42.0", 42, False, True),
        ("42.5", 42, False, False),
        ("It is **7**", 7, False, True),
        ("−5", -5, False, True),
        ("42 then 43", 42, False, False),
        ("no idea", 3, False, False),
        ("", 0, False, False),
        (None, 0, False, False),
    ],
)
def test_strict_and_lenient(answer: str | None, expected: int, strict: bool, lenient: bool) -> None:
    s = score_arithmetic(answer, expected)
    assert (s.strict, s.lenient) == (strict, lenient)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12-3", 3),  # a dash after a digit is not a minus sign
        ("1, 2, 3", 3),  # comma-space separates numbers
        ("1,2345", 2345),  # not a thousands group
        ("x = -7, so", -7),
        ("１２", 12),  # full-width digits
        ("nothing", None),
        ("3.25", None),
    ],
)
def test_last_integer(text: str, value: int | None) -> None:
    assert last_integer(text) == value


def test_last_number_keeps_decimals_and_drops_commas() -> None:
    assert last_number("costs $1,234.50 total") == ("1234.50", 1234.5)
    assert last_number("-0.5") == ("-0.5", -0.5)
    assert last_number("none") is None


def test_exact() -> None:
    exact = make_scorer("exact")
    assert exact(" Paris \n", "Paris").correct
    assert not exact("paris", "Paris").correct
    assert exact("12", 12).correct
    assert exact("12", 12.0).correct  # CSV/pandas turn 12 into 12.0
    assert not exact(None, "Paris").correct


def test_number() -> None:
    number = make_scorer("number")
    s = number("The total is 1,234.5 dollars", "1234.5")
    assert s.correct and s.extracted == "1234.5"
    assert number("about 3", 3).correct
    assert not number("about 4", 3).correct
    assert make_scorer("number", tolerance=0.5)("3.4", 3).correct
    assert not number("none", 3).correct
    with pytest.raises(InputError, match="not a number"):
        number("3", "three")


def test_contains_ignores_case() -> None:
    contains = make_scorer("contains")
    assert contains("The capital is PARIS.", "paris").correct
    assert not contains("London", "paris").correct
    with pytest.raises(InputError, match="empty"):
        contains("x", "  ")


def test_regex_with_pattern_extracts_and_compares() -> None:
    named = make_scorer("regex", pattern=r"answer:\s*(?P<answer>\w+)")
    s = named("Thinking... answer: B", "B")
    assert s.correct and s.extracted == "B"
    group = make_scorer("regex", pattern=r"\[(\w+)\]")
    assert group("I pick [C] here", "C").correct
    assert not group("I pick C here", "C").correct
    whole = make_scorer("regex", pattern=r"\d+")
    assert whole("year 2024 and 2025", "2024").correct


def test_regex_without_pattern_reads_the_reference_as_a_regex() -> None:
    regex = make_scorer("regex")
    assert regex("the answer is 42", r"\b42\b").correct
    assert not regex("the answer is 420", r"\b42\b").correct
    with pytest.raises(InputError, match="regular expression"):
        regex("x", "(unclosed")


def test_make_scorer_refuses_bad_choices() -> None:
    with pytest.raises(ConfigError, match="unknown scorer"):
        make_scorer("fuzzy")
    with pytest.raises(ConfigError, match="--pattern"):
        make_scorer("exact", pattern="x")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        make_scorer("regex", pattern="(")


def test_parse_json_answer_finds_fenced_and_embedded_json() -> None:
    assert parse_json_answer('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_answer("Sure! Here it is:\n```\n[1, 2]\n```\nDone.") == [1, 2]
    assert parse_json_answer('The entities are {"person": ["张三"]} as asked.') == {
        "person": ["张三"]
    }
    assert parse_json_answer('{"a": 1}') == {"a": 1}
    assert parse_json_answer("see {not json} and [also not") is None
    assert parse_json_answer("no json here") is None


def test_json_fields_precision_recall_f1() -> None:
    ref = {"person": ["张三", "李四"], "location": ["北京"], "org": []}
    answer = 'Result:\n```json\n{"person": ["张三"], "location": ["北京", "上海"]}\n```'
    s = score_json(answer, ref)
    assert s.facts == FactCounts(matched=2, predicted=3, expected=3)
    assert s.facts.precision == pytest.approx(2 / 3)
    assert s.facts.recall == pytest.approx(2 / 3)
    assert s.facts.f1 == pytest.approx(2 / 3)
    assert not s.correct
    assert s.by_field["person"] == FactCounts(1, 1, 2)
    assert s.by_field["location"] == FactCounts(1, 2, 1)
    assert "org" not in s.by_field  # an empty list is no fact


def test_json_exact_match_ignores_order_whitespace_and_number_format() -> None:
    ref = '{"person": ["a", "b"], "age": 3, "meta": {"lang": "zh"}}'
    s = score_json('{"meta": {"lang": " zh"}, "age": 3.0, "person": ["b", "a"]}', ref)
    assert s.correct
    assert s.facts is not None and s.facts.f1 == 1.0


def test_json_entity_lists_match_whole_entities() -> None:
    ref = [{"type": "PER", "text": "张三"}, {"type": "LOC", "text": "北京"}]
    got = '[{"text": "张三", "type": "PER"}, {"type": "ORG", "text": "北京"}]'
    s = score_json(got, ref)
    assert s.facts == FactCounts(matched=1, predicted=2, expected=2)


def test_json_unparseable_answer_and_empty_sets() -> None:
    s = score_json("I cannot find any entities.", {"person": ["a"]})
    assert not s.correct and s.extracted is None
    assert s.facts == FactCounts(0, 0, 1)
    assert s.facts.precision == 0.0 and s.facts.recall == 0.0 and s.facts.f1 == 0.0
    empty = score_json("{}", {"person": []})
    assert empty.correct and empty.facts is not None and empty.facts.f1 == 1.0
    assert not score_json(None, {"person": []}).correct


def test_json_bad_reference() -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        score_json("{}", "person: a")
    with pytest.raises(InputError):
        score_json("{}", 3)
