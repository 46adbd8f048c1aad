"""The seed's arithmetic set: same expressions as the seed's generator, exact results."""

from __future__ import annotations

import random

import pytest

from squall.errors import ConfigError, InputError
from squall.evals.arithmetic import (
    DEFAULT_TEMPLATE,
    SEED_OPERANDS,
    evaluate_expression,
    generate_items,
    item_for,
    parse_expression,
)


def seed_generate_arithmetic_expression(rng: random.Random, num: int) -> tuple[str, int]:
    """The seed post's function, verbatim but for `random` -> a seeded `rng`."""
    operators = ["+", "-", "*"]
    expression = f"{rng.randint(1, 100)} {rng.choice(operators)} {rng.randint(1, 100)}"
    num -= 1
    for _ in range(num):
        expression = f"{expression} {rng.choice(operators)} {rng.randint(1, 100)}"
    result = eval(expression)  # the seed's own generated string, as the seed does
    expression = expression.replace("*", "x")
    return expression, result


@pytest.mark.parametrize("seed", [0, 1, 12345])
@pytest.mark.parametrize("seed_num", [1, 2, 4])
def test_generate_items_is_the_seeds_set(seed: int, seed_num: int) -> None:
    rng = random.Random(seed)
    want = [seed_generate_arithmetic_expression(rng, seed_num) for _ in range(300)]
    items = generate_items(300, operands=seed_num + 1, seed=seed)
    assert [(i.expression, i.expected) for i in items] == want
    assert all(i.operands == seed_num + 1 for i in items)


def test_default_operands_is_the_seeds_call() -> None:
    # The seed calls generate_arithmetic_expression(2): two operators, three numbers.
    assert SEED_OPERANDS == 3
    assert DEFAULT_TEMPLATE == "{expression}"
    rng = random.Random(0)
    assert [i.expression for i in generate_items(5)] == [
        seed_generate_arithmetic_expression(rng, 2)[0] for _ in range(5)
    ]


def test_same_seed_same_set_and_global_rng_untouched() -> None:
    state = random.getstate()
    a = generate_items(50, seed=7)
    b = generate_items(50, seed=7)
    c = generate_items(50, seed=8)
    assert a == b
    assert a != c
    assert random.getstate() == state


def test_items_record_operators_operands_and_ids() -> None:
    items = generate_items(200, operands=4, seed=3)
    assert [i.id for i in items] == list(range(200))
    for item in items:
        assert item.operands == 4
        assert "*" not in item.expression
        used = {t for t in item.expression.split() if not t.isdigit()}
        assert set(item.operators) == used
        assert item.operators == "".join(op for op in "+-x" if op in used)
        numbers = [int(t) for t in item.expression.split() if t.isdigit()]
        assert all(1 <= v <= 100 for v in numbers)
    assert item_for(3, "2 x 3 + 1").as_row() == {
        "id": 3,
        "expression": "2 x 3 + 1",
        "operators": "+x",
        "operands": 3,
        "expected": 7,
    }


def test_evaluate_matches_python_precedence_on_many_expressions() -> None:
    rng = random.Random(99)
    for _ in range(2000):
        k = rng.randint(2, 7)
        parts = [str(rng.randint(0, 100))]
        for _ in range(k - 1):
            parts += [rng.choice("+-*"), str(rng.randint(0, 100))]
        text = " ".join(parts)
        assert evaluate_expression(text.replace("*", "x")) == eval(text), text


@pytest.mark.parametrize(
    ("text", "value"),
    [("1 + 2 x 3", 7), ("10 - 4 - 3", 3), ("2x3x4", 24), ("7 × 6", 42), ("5 * 2 - 20", -10)],
)
def test_evaluate_expression_examples(text: str, value: int) -> None:
    assert evaluate_expression(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 +",
        "+ 1",
        "1 + + 2",
        "2 ** 3",
        "1 / 2",
        "__import__('os')",
        "1 2",
        "-1 + 2",
        "1.5 + 2",
    ],
)
def test_parse_expression_refuses_anything_else(text: str) -> None:
    with pytest.raises(InputError) as e:
        parse_expression(text)
    assert e.value.field == "expression"


def test_bad_sizes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--operands"):
        generate_items(3, operands=1)
    with pytest.raises(ConfigError, match="-n"):
        generate_items(0)
