"""Score the engine's output rows, and check a set's references before anything is sent."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from ..errors import InputError, OutputError
from ..inputs import open_input
from ..records import OUTPUT_FIELDS
from .arithmetic import ArithmeticItem
from .report import ArithmeticModelReport, FileModelReport
from .scorers import Scorer, score_arithmetic

RowState = Literal["ok", "failed", "pending"]
"""An output row was answered, failed for good, or is still waiting (a run ended early)."""


def row_state(row: Mapping[str, Any], *, complete: bool) -> RowState:
    """Return whether an output row was answered, failed for good, or is still pending.

    In a complete run every row without an error was answered (maybe with empty text). In a
    run that ended early the output cannot tell a failed row from one left to retry, so every
    row without an answer is pending: not scored, and counted apart.
    """
    if row.get("response") is not None:
        return "ok"
    if not complete:
        return "pending"
    return "failed" if row.get("error") is not None else "ok"


def score_arithmetic_rows(
    items: Sequence[ArithmeticItem],
    rows: Iterable[dict[str, Any]],
    report: ArithmeticModelReport,
    *,
    complete: bool = True,
) -> Iterator[tuple[dict[str, Any], RowState]]:
    """Yield each output row with its score columns, and its state (see `row_state`).

    The exact results come from `items` (not from the output file, where a CSV would
    turn numbers into text); each row is checked to be the item's expression.

    Raises:
        OutputError: the output's rows are not the eval's items, in order.
    """
    count = 0
    for row in rows:
        if count >= len(items):
            raise OutputError(
                f"the output has more rows than the {len(items)} expressions: it does not "
                "belong to this eval; rerun with --restart or choose another --out"
            )
        item = items[count]
        count += 1
        if row.get("expression") != item.expression:
            raise OutputError(
                f"output row {item.id + 1} is {row.get('expression')!r}, expected "
                f"{item.expression!r}: the output does not belong to this eval; rerun with "
                "--restart or choose another --out"
            )
        state = row_state(row, complete=complete)
        if state == "pending":
            report.add_pending()
            yield {**row, "score_strict": None, "score_lenient": None, "score_parsed": None}, state
            continue
        score = score_arithmetic(row.get("response"), item.expected)
        report.add(
            operators=item.operators, operands=item.operands, score=score, failed=state == "failed"
        )
        yield (
            {
                **row,
                "score_strict": score.strict,
                "score_lenient": score.lenient,
                "score_parsed": score.parsed,
            },
            state,
        )
    if count != len(items):
        raise OutputError(
            f"the output has {count} rows for {len(items)} expressions; rerun the eval to finish it"
        )


def score_file_rows(
    scorer: Scorer,
    reference: str,
    rows: Iterable[dict[str, Any]],
    report: FileModelReport,
    *,
    complete: bool = True,
) -> Iterator[tuple[dict[str, Any], RowState]]:
    """Yield each output row with its score columns, and its state (see `row_state`).

    Raises:
        InputError: a row has no `reference` column, or one the scorer cannot use.
    """
    # The engine renames an input column that clashes with its own (`response` ->
    # `input_response`), so a reference column of that name is found under the new name.
    key = f"input_{reference}" if reference in OUTPUT_FIELDS else reference
    for i, row in enumerate(rows):
        if key not in row:
            raise InputError(
                f"output row {i + 1} has no column {reference!r}; columns: {', '.join(row)}",
                field=reference,
            )
        state = row_state(row, complete=complete)
        if state == "pending":
            report.add_pending()
            yield {**row, "score_correct": None, "score_extracted": None}, state
            continue
        try:
            score = scorer(row.get("response"), row[key])
        except InputError as e:
            raise InputError(str(e), line=i + 1, field=reference) from None
        report.add(score, failed=state == "failed")
        extra: dict[str, Any] = {"score_correct": score.correct, "score_extracted": score.extracted}
        if score.facts is not None:
            extra |= {
                "score_precision": score.facts.precision,
                "score_recall": score.facts.recall,
                "score_f1": score.facts.f1,
            }
        yield {**row, **extra}, state


def check_references(data: Any, reference: str, scorer: Scorer) -> int:
    """Return how many rows `data` has, after checking each has a usable `reference`.

    Raises:
        InputError: the column is missing (the message lists those that exist), or a
            reference the scorer cannot use, naming the file, line and column.
    """
    source = open_input(data)
    count = 0
    for row in source.rows():
        count += 1
        if reference not in row.data:
            raise InputError(
                f"no column {reference!r}; columns: {', '.join(row.data) or '(none)'}",
                file=source.name,
                line=row.line,
                field=reference,
            )
        try:
            scorer(None, row.data[reference])
        except InputError as e:
            raise InputError(str(e), file=source.name, line=row.line, field=reference) from None
    return count
