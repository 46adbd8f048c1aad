"""Scorers: turn a model's answer and the reference into a verdict.

Arithmetic answers get two verdicts (`score_arithmetic`): *strict*, the answer stripped is
exactly the number, and *lenient*, the last number in the text is it. Users' own sets pick one
scorer by name (`make_scorer`):

- `exact`: the answer stripped equals the reference stripped.
- `number`: the last number in the answer (commas allowed, `1,234.5`) equals the reference
  within `tolerance`.
- `contains`: the reference appears in the answer, ignoring case.
- `regex`: with a pattern, the pattern's `answer` group (else its first group, else the whole
  match) found in the answer equals the reference; without one, the reference is itself a
  regular expression that must be found in the answer.
- `json`: the answer's JSON (found inside ```json fences or surrounding text) is compared with
  the reference's fact by fact: each scalar under a key path is a fact, and each item of a list
  is one (an entity object in a list must match whole). Empty values (null, "", [], {}) are no
  fact. Gives precision, recall and F1; `correct` means the two sets of facts are equal.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, InputError

ScorerName = Literal["exact", "number", "contains", "regex", "json"]
SCORER_NAMES: tuple[ScorerName, ...] = ("exact", "number", "contains", "regex", "json")

# A minus counts only when it does not follow a digit ("12-3" is not minus three), and a comma
# only between groups of three digits ("1,234" is one number, "1, 2" two).
_NUMBER = re.compile(
    r"(?:(?<!\d)(?P<sign>[-−]))?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?"
)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
_MAX_JSON_STARTS = 64  # bounds the scan of a long rambling answer for a JSON value


@dataclass(frozen=True, slots=True)
class FactCounts:
    """Facts in both answer and reference, in the answer, and in the reference."""

    matched: int = 0
    predicted: int = 0
    expected: int = 0

    def __add__(self, other: FactCounts) -> FactCounts:
        return FactCounts(
            self.matched + other.matched,
            self.predicted + other.predicted,
            self.expected + other.expected,
        )

    @property
    def precision(self) -> float:
        """Matched / predicted; 1.0 when nothing was predicted and nothing expected."""
        if self.predicted == 0:
            return 1.0 if self.expected == 0 else 0.0
        return self.matched / self.predicted

    @property
    def recall(self) -> float:
        """Matched / expected; 1.0 when nothing was expected and nothing predicted."""
        if self.expected == 0:
            return 1.0 if self.predicted == 0 else 0.0
        return self.matched / self.expected

    @property
    def f1(self) -> float:
        """The harmonic mean of precision and recall (0.0 when both are 0)."""
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)


@dataclass(frozen=True, slots=True)
class Score:
    """One answer's verdict.

    Attributes:
        correct: the answer counts as right.
        extracted: what the scorer read from the answer (the number, the match, the JSON),
            or None when it found nothing.
        facts: for the json scorer, the row's fact counts; else None.
        by_field: for the json scorer, the fact counts per key path.
    """

    correct: bool
    extracted: str | None = None
    facts: FactCounts | None = None
    by_field: Mapping[str, FactCounts] = field(default_factory=dict)


Scorer = Callable[[str | None, Any], Score]
"""`scorer(answer, reference)`: answer is None when the request failed.

Raises InputError (without file or line; the caller adds them) for a reference it cannot use.
"""


@dataclass(frozen=True, slots=True)
class ArithmeticScore:
    """Both verdicts for one arithmetic answer, and the integer read from it (or None)."""

    strict: bool
    lenient: bool
    parsed: int | None


def score_arithmetic(answer: str | None, expected: int) -> ArithmeticScore:
    """Return the strict and lenient verdicts of `answer` against the exact `expected` value."""
    if answer is None:
        return ArithmeticScore(strict=False, lenient=False, parsed=None)
    parsed = last_integer(answer)
    return ArithmeticScore(
        strict=answer.strip() == str(expected),
        lenient=parsed == expected,
        parsed=parsed,
    )


def last_number(text: str) -> tuple[str, float] | None:
    """Return the last number in `text` as written (commas removed) and as a float, or None."""
    found = _last_match(text)
    if found is None:
        return None
    sign = "-" if found.group("sign") else ""
    # int() reads any Unicode digit (full-width ones too); float() wants ASCII.
    digits = str(int(found.group("int").replace(",", "")))
    frac = "".join(str(int(c)) for c in found.group("frac") or "")
    written = f"{sign}{digits}.{frac}" if frac else f"{sign}{digits}"
    value = float(written)
    return written, value


def last_integer(text: str) -> int | None:
    """Return the last number in `text` if it is a whole number (`-1,234`, `42.0`), else None."""
    found = _last_match(text)
    if found is None:
        return None
    frac = found.group("frac")
    if frac and int(frac) != 0:
        return None
    value = int(found.group("int").replace(",", ""))
    return -value if found.group("sign") else value


def _last_match(text: str) -> re.Match[str] | None:
    found = None
    for m in _NUMBER.finditer(text):
        found = m
    return found


def make_scorer(name: str, *, pattern: str | None = None, tolerance: float = 1e-9) -> Scorer:
    """Return the scorer called `name` (one of SCORER_NAMES).

    Args:
        name: exact, number, contains, regex or json.
        pattern: for `regex` only: the expression that finds the answer in the text.
        tolerance: for `number` only: the largest absolute difference still counted right.

    Raises:
        ConfigError: an unknown name, a pattern given to another scorer, or a bad pattern.
    """
    if name not in SCORER_NAMES:
        raise ConfigError(f"unknown scorer {name!r}: choose one of {', '.join(SCORER_NAMES)}")
    if pattern is not None and name != "regex":
        raise ConfigError(f"--pattern works with --scorer regex only, not {name!r}")
    if name == "exact":
        return score_exact
    if name == "contains":
        return score_contains
    if name == "json":
        return score_json
    if name == "number":
        return _number_scorer(tolerance)
    if pattern is None:
        return score_reference_regex
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"--pattern {pattern!r} is not a valid regular expression: {e}") from None
    return _pattern_scorer(compiled)


def score_exact(answer: str | None, reference: Any) -> Score:
    """Return whether `answer` stripped equals the reference stripped."""
    want = _text(reference).strip()
    if answer is None:
        return Score(correct=False)
    got = answer.strip()
    return Score(correct=got == want, extracted=got)


def score_contains(answer: str | None, reference: Any) -> Score:
    """Return whether the reference appears in `answer`, ignoring case."""
    want = _text(reference).strip()
    if not want:
        raise InputError("the reference is empty, and every answer contains the empty text")
    if answer is None:
        return Score(correct=False)
    found = want.casefold() in answer.casefold()
    return Score(correct=found, extracted=want if found else None)


def score_reference_regex(answer: str | None, reference: Any) -> Score:
    """Return whether the reference, read as a regular expression, is found in `answer`."""
    try:
        compiled = re.compile(_text(reference))
    except re.error as e:
        raise InputError(
            f"the reference {reference!r} is not a valid regular expression: {e}"
        ) from None
    if answer is None:
        return Score(correct=False)
    m = compiled.search(answer)
    return Score(correct=m is not None, extracted=None if m is None else m.group(0))


def score_json(answer: str | None, reference: Any) -> Score:
    """Return field-level precision, recall and F1 of the answer's JSON against the reference."""
    want = _reference_json(reference)
    got = None if answer is None else parse_json_answer(answer)
    want_facts = json_facts(want)
    got_facts = json_facts(got) if got is not None else Counter()
    by_field: dict[str, FactCounts] = {}
    for path in sorted({p for p, _ in want_facts} | {p for p, _ in got_facts}):
        w = Counter({f: c for f, c in want_facts.items() if f[0] == path})
        g = Counter({f: c for f, c in got_facts.items() if f[0] == path})
        by_field[path] = FactCounts(sum((w & g).values()), sum(g.values()), sum(w.values()))
    total = sum(by_field.values(), FactCounts())
    return Score(
        correct=got is not None and got_facts == want_facts,
        extracted=None if got is None else json.dumps(got, ensure_ascii=False, sort_keys=True),
        facts=total,
        by_field=by_field,
    )


def parse_json_answer(text: str) -> Any | None:
    """Return the first JSON object or array in `text` (fenced or not), or None if there is none."""
    for block in _FENCE.findall(text):
        try:
            return json.loads(block)
        except ValueError:
            continue
    stripped = text.strip()
    try:
        value = json.loads(stripped)
    except ValueError:
        pass
    else:
        if isinstance(value, (dict, list)):
            return value
    decoder = json.JSONDecoder()
    starts = [i for i, ch in enumerate(text) if ch in "{["][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return value
    return None


def json_facts(value: Any, path: str = "") -> Counter[tuple[str, str]]:
    """Return the facts of a JSON value: (key path, canonical value) pairs, with counts."""
    facts: Counter[tuple[str, str]] = Counter()
    if isinstance(value, dict):
        for key, inner in value.items():
            facts += json_facts(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for item in value:
            if not _is_empty(item):
                facts[(path, _canonical(item))] += 1
    elif not _is_empty(value):
        facts[(path, _canonical(value))] += 1
    return facts


def _number_scorer(tolerance: float) -> Scorer:
    def score_number(answer: str | None, reference: Any) -> Score:
        want = _reference_number(reference)
        if answer is None:
            return Score(correct=False)
        found = last_number(answer)
        if found is None:
            return Score(correct=False)
        written, value = found
        ok = math.isclose(value, want, rel_tol=1e-9, abs_tol=tolerance)
        return Score(correct=ok, extracted=written)

    return score_number


def _pattern_scorer(compiled: re.Pattern[str]) -> Scorer:
    def score_regex(answer: str | None, reference: Any) -> Score:
        want = _text(reference).strip()
        if answer is None:
            return Score(correct=False)
        m = compiled.search(answer)
        if m is None:
            return Score(correct=False)
        if "answer" in compiled.groupindex:
            got = m.group("answer")
        elif compiled.groups:
            got = m.group(1)
        else:
            got = m.group(0)
        got = (got or "").strip()
        return Score(correct=got == want, extracted=got)

    return score_regex


def _text(reference: Any) -> str:
    if reference is None:
        raise InputError("the reference is missing (null)")
    if isinstance(reference, float) and reference.is_integer():
        return str(int(reference))  # CSV and pandas turn 12 into 12.0
    return reference if isinstance(reference, str) else str(reference)


def _reference_number(reference: Any) -> float:
    if isinstance(reference, bool) or reference is None:
        raise InputError(f"the reference {reference!r} is not a number")
    if isinstance(reference, (int, float)):
        return float(reference)
    try:
        return float(str(reference).strip().replace(",", ""))
    except ValueError:
        raise InputError(f"the reference {reference!r} is not a number") from None


def _reference_json(reference: Any) -> Any:
    if isinstance(reference, (dict, list)):
        return reference
    if not isinstance(reference, str):
        raise InputError(f"the reference {reference!r} is not JSON text, an object or a list")
    try:
        return json.loads(reference)
    except ValueError:
        parsed = parse_json_answer(reference)
        if parsed is None:
            raise InputError(f"the reference {reference[:80]!r} is not valid JSON") from None
        return parsed


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _canonical(value: Any) -> str:
    return json.dumps(_normalise(value), ensure_ascii=False, sort_keys=True)


def _normalise(value: Any) -> Any:
    # Whitespace around strings and 3 vs 3.0 are formatting, not content.
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items() if not _is_empty(v)}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value
