"""The seed's arithmetic test set: expressions like `12 + 34 x 56` with their exact results.

`generate_items(n, operands=3, seed=s)` makes the same expressions, in the same order, as the
seed's `generate_arithmetic_expression(operands - 1)` called `n` times after `random.seed(s)`:
it draws from its own `random.Random(seed)` in the seed's order (number, operator, number,
then operator and number for each further operand). Note the seed's argument counts
*operators*: its `generate_arithmetic_expression(2)` gives three numbers, so squall's
`operands=3` is the seed's set.

Results are computed by `evaluate_expression`, a small parser with Python's integer semantics
(`x` binds tighter than `+` and `-`, all left-associative), never by `eval`: the seed's
`eval(expression)` on its own generated string gives the same numbers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InputError

OPERATORS: tuple[str, ...] = ("+", "-", "x")
"""The operators as written in expressions, in the order reports list them."""

DEFAULT_TEMPLATE = "{expression}"
"""The prompt is the bare expression, as the seed sends it."""

SEED_OPERANDS = 3
"""Numbers per expression in the seed's set (its `generate_arithmetic_expression(2)`)."""

MIN_OPERAND, MAX_OPERAND = 1, 100

_SEED_OPERATORS = ("+", "-", "*")  # the seed's list; the order matters for random.choice
_TOKEN = re.compile(r"\s*(?:(\d+)|([-+x*×]))")


@dataclass(frozen=True, slots=True)
class ArithmeticItem:
    """One expression of the set.

    Attributes:
        id: 0-based position in the set.
        expression: as sent to the model, with `x` for multiplication: `12 + 34 x 56`.
        operators: the distinct operators it uses, in OPERATORS order: `"+x"`.
        operands: how many numbers it has.
        expected: its exact value.
    """

    id: int
    expression: str
    operators: str
    operands: int
    expected: int

    def as_row(self) -> dict[str, Any]:
        """Return the item as an input row for squall's engine."""
        return {
            "id": self.id,
            "expression": self.expression,
            "operators": self.operators,
            "operands": self.operands,
            "expected": self.expected,
        }


def generate_expression(rng: random.Random, operands: int = SEED_OPERANDS) -> str:
    """Return one expression with `operands` numbers from 1 to 100, drawn as the seed draws them.

    Raises:
        ConfigError: `operands` is below 2.
    """
    if operands < 2:
        raise ConfigError(f"--operands must be at least 2, got {operands}")
    parts = [str(rng.randint(MIN_OPERAND, MAX_OPERAND))]
    for _ in range(operands - 1):
        parts.append(rng.choice(_SEED_OPERATORS))
        parts.append(str(rng.randint(MIN_OPERAND, MAX_OPERAND)))
    return " ".join(parts).replace("*", "x")


def generate_items(n: int, *, operands: int = SEED_OPERANDS, seed: int = 0) -> list[ArithmeticItem]:
    """Return `n` expressions with their exact results; the same `seed` gives the same set.

    Raises:
        ConfigError: `n` is below 1 or `operands` below 2.
    """
    if n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    rng = random.Random(seed)
    return [item_for(i, generate_expression(rng, operands)) for i in range(n)]


def item_for(index: int, expression: str) -> ArithmeticItem:
    """Return the item for `expression`, its operators, operand count and exact value.

    Raises:
        InputError: `expression` is not numbers joined by `+`, `-` and `x`.
    """
    numbers, ops = parse_expression(expression)
    used = "".join(op for op in OPERATORS if op in ops)
    return ArithmeticItem(
        id=index,
        expression=expression,
        operators=used,
        operands=len(numbers),
        expected=_evaluate(numbers, ops),
    )


def evaluate_expression(expression: str) -> int:
    """Return the exact integer value of `expression` (`x`, `*` or `×` multiply).

    Raises:
        InputError: `expression` is not non-negative integers joined by `+`, `-` and `x`.
    """
    numbers, ops = parse_expression(expression)
    return _evaluate(numbers, ops)


def parse_expression(expression: str) -> tuple[list[int], list[str]]:
    """Return the numbers and operators (`+`, `-`, `x`) of `expression`, in order.

    Raises:
        InputError: anything but non-negative integers joined by `+`, `-` and `x`.
    """
    numbers: list[int] = []
    ops: list[str] = []
    for pos, number, op in _tokens(expression):
        want_number = len(numbers) == len(ops)
        if want_number != (number is not None):
            raise InputError(
                f"expected {'a number' if want_number else 'an operator'} at character "
                f"{pos + 1} of {expression!r}",
                field="expression",
            )
        if number is not None:
            numbers.append(int(number))
        else:
            ops.append("x" if op in ("*", "×") else str(op))
    if not numbers or len(numbers) == len(ops):
        raise InputError(f"{expression!r} must end with a number", field="expression")
    return numbers, ops


def _tokens(expression: str) -> Iterator[tuple[int, str | None, str | None]]:
    pos = 0
    end = len(expression.rstrip())
    while pos < end:
        m = _TOKEN.match(expression, pos)
        if m is None:
            raise InputError(
                f"unexpected {expression[pos]!r} at character {pos + 1} of {expression!r}: "
                "only whole numbers and + - x are allowed",
                field="expression",
            )
        yield m.start(m.lastindex or 0), m.group(1), m.group(2)
        pos = m.end()


def _evaluate(numbers: list[int], ops: list[str]) -> int:
    # Sum of products: each run of `x` folds into one term, then terms add or subtract left
    # to right, which is exactly Python's precedence and associativity for + - *.
    total = 0
    sign = 1
    term = numbers[0]
    for op, number in zip(ops, numbers[1:], strict=True):
        if op == "x":
            term *= number
        else:
            total += sign * term
            sign = 1 if op == "+" else -1
            term = number
    return total + sign * term
