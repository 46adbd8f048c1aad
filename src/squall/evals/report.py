"""Accuracy tables for an eval: overall, by operator, by operand count, side by side per model.

A report is built row by row (`add`), then written as Markdown (`report.md`), JSON
(`summary.json`) and, for the arithmetic set, a PNG chart of accuracy by operator and model.
A row whose request failed counts as wrong, and is also counted under `failed`. A row left
unanswered by a run that ended early is *pending*: not scored, counted apart, and the report
says the eval is incomplete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arithmetic import OPERATORS
from .chart import write_bar_chart
from .scorers import ArithmeticScore, FactCounts, Score

REPORT_NAME = "report.md"
SUMMARY_NAME = "summary.json"
CHART_NAME = "accuracy.png"


@dataclass(slots=True)
class Tally:
    """Rows seen, and how many were right strictly and leniently."""

    total: int = 0
    strict: int = 0
    lenient: int = 0

    def add(self, score: ArithmeticScore) -> None:
        """Count one scored row."""
        self.total += 1
        self.strict += score.strict
        self.lenient += score.lenient

    @property
    def strict_accuracy(self) -> float:
        """Strictly right / rows (0.0 for no rows)."""
        return self.strict / self.total if self.total else 0.0

    @property
    def lenient_accuracy(self) -> float:
        """Leniently right / rows (0.0 for no rows)."""
        return self.lenient / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counts and accuracies, for summary.json."""
        return {
            "rows": self.total,
            "strict": self.strict,
            "lenient": self.lenient,
            "strict_accuracy": self.strict_accuracy,
            "lenient_accuracy": self.lenient_accuracy,
        }


@dataclass(slots=True)
class ArithmeticModelReport:
    """One model's arithmetic scores."""

    model: str
    overall: Tally = field(default_factory=Tally)
    failed: int = 0
    pending: int = 0
    by_operator: dict[str, Tally] = field(default_factory=lambda: {op: Tally() for op in OPERATORS})
    by_operands: dict[int, Tally] = field(default_factory=dict)

    def add(self, *, operators: str, operands: int, score: ArithmeticScore, failed: bool) -> None:
        """Count one row: under each operator the expression uses, and under its operand count."""
        self.overall.add(score)
        self.failed += failed
        for op in OPERATORS:
            if op in operators:
                self.by_operator[op].add(score)
        self.by_operands.setdefault(operands, Tally()).add(score)

    def add_pending(self) -> None:
        """Count one row left unanswered (not scored)."""
        self.pending += 1

    def as_dict(self) -> dict[str, Any]:
        """Return the scores, for summary.json."""
        return {
            "model": self.model,
            "failed": self.failed,
            "pending": self.pending,
            **self.overall.as_dict(),
            "by_operator": {op: t.as_dict() for op, t in self.by_operator.items()},
            "by_operands": {str(k): t.as_dict() for k, t in sorted(self.by_operands.items())},
        }


@dataclass(slots=True)
class ArithmeticReport:
    """The arithmetic eval of one or more models on the same set."""

    n: int
    operands: int
    seed: int
    template: str
    models: list[ArithmeticModelReport] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    """Models not started because an earlier model's run ended early."""

    def as_dict(self) -> dict[str, Any]:
        """Return the whole report, for summary.json."""
        return {
            "eval": "arithmetic",
            "n": self.n,
            "operands": self.operands,
            "seed": self.seed,
            "template": self.template,
            "models": [m.as_dict() for m in self.models],
            "not_run": list(self.not_run),
        }

    def markdown(self, chart: str | None = CHART_NAME) -> str:
        """Return the report as Markdown, linking `chart` (a file name) when given."""
        lines = [
            "# Arithmetic eval",
            "",
            f"{self.n} expressions of {self.operands} numbers (1 to 100, operators + - x), "
            f"seed {self.seed}, prompt template `{self.template}`.",
            "Strict: the answer is exactly the number. Lenient: the last number in the answer is "
            "it. A failed request counts as wrong.",
            "",
            *_incomplete(self.models, self.not_run),
            "## Overall",
            "",
            "| model | rows | failed | strict | lenient |",
            "|---|---:|---:|---:|---:|",
        ]
        for m in self.models:
            t = m.overall
            lines.append(
                f"| {_cell(m.model)} | {t.total} | {m.failed} | {_pct(t.strict_accuracy)} | "
                f"{_pct(t.lenient_accuracy)} |"
            )
        lines += ["", "## By operator", "", "An expression counts under each operator it has.", ""]
        by_op = [(op, [m.by_operator[op] for m in self.models]) for op in OPERATORS]
        lines += _side_by_side("operator", self.models, by_op)
        counts = sorted({k for m in self.models for k in m.by_operands})
        lines += ["", "## By operand count", ""]
        lines += _side_by_side(
            "operands",
            self.models,
            [(str(k), [m.by_operands.get(k, Tally()) for m in self.models]) for k in counts],
        )
        if chart:
            lines += ["", f"![Accuracy by operator and model]({chart})"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, *, chart: bool = True) -> list[Path]:
        """Write report.md, summary.json and (when `chart`) accuracy.png; return their paths.

        Raises:
            MissingExtraError: `chart` is set and matplotlib is not installed.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        if chart:
            categories = ["all", *OPERATORS]
            panels = {
                name: {
                    m.model: [getattr(t, attr) for t in (m.overall, *m.by_operator.values())]
                    for m in self.models
                }
                for name, attr in (("strict", "strict_accuracy"), ("lenient", "lenient_accuracy"))
            }
            written.append(
                write_bar_chart(
                    out_dir / CHART_NAME,
                    title="Arithmetic accuracy by operator",
                    categories=categories,
                    panels=panels,
                )
            )
        markdown = self.markdown(CHART_NAME if chart else None)
        written.append(_write_text(out_dir / REPORT_NAME, markdown))
        written.append(_write_json(out_dir / SUMMARY_NAME, self.as_dict()))
        return written


@dataclass(slots=True)
class FileModelReport:
    """One model's scores on a user's file."""

    model: str
    total: int = 0
    correct: int = 0
    failed: int = 0
    pending: int = 0
    facts: FactCounts | None = None
    f1_sum: float = 0.0
    by_field: dict[str, FactCounts] = field(default_factory=dict)

    def add(self, score: Score, *, failed: bool) -> None:
        """Count one scored row."""
        self.total += 1
        self.correct += score.correct
        self.failed += failed
        if score.facts is not None:
            self.facts = score.facts if self.facts is None else self.facts + score.facts
            self.f1_sum += score.facts.f1
            for path, counts in score.by_field.items():
                self.by_field[path] = self.by_field.get(path, FactCounts()) + counts

    def add_pending(self) -> None:
        """Count one row left unanswered (not scored)."""
        self.pending += 1

    @property
    def accuracy(self) -> float:
        """Right / rows (0.0 for no rows)."""
        return self.correct / self.total if self.total else 0.0

    @property
    def macro_f1(self) -> float:
        """The mean of the rows' F1 (json scorer; 0.0 otherwise)."""
        return self.f1_sum / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the scores, for summary.json."""
        out: dict[str, Any] = {
            "model": self.model,
            "rows": self.total,
            "correct": self.correct,
            "failed": self.failed,
            "pending": self.pending,
            "accuracy": self.accuracy,
        }
        if self.facts is not None:
            out["micro"] = _prf(self.facts)
            out["macro_f1"] = self.macro_f1
            out["by_field"] = {p: _prf(c) for p, c in sorted(self.by_field.items())}
        return out


@dataclass(slots=True)
class FileReport:
    """The eval of one or more models on a user's file, scored against its reference column."""

    source: str
    reference: str
    scorer: str
    models: list[FileModelReport] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    """Models not started because an earlier model's run ended early."""

    def as_dict(self) -> dict[str, Any]:
        """Return the whole report, for summary.json."""
        return {
            "eval": "file",
            "source": self.source,
            "reference": self.reference,
            "scorer": self.scorer,
            "models": [m.as_dict() for m in self.models],
            "not_run": list(self.not_run),
        }

    def markdown(self, chart: str | None = CHART_NAME) -> str:
        """Return the report as Markdown, linking `chart` (a file name) when given."""
        json_scorer = any(m.facts is not None for m in self.models)
        lines = [
            f"# Eval of {self.source}",
            "",
            f"Scorer `{self.scorer}` against column `{self.reference}`. "
            "A failed request counts as wrong.",
            "",
            *_incomplete(self.models, self.not_run),
            "## Overall",
            "",
        ]
        if json_scorer:
            lines += [
                "| model | rows | failed | exact match | precision | recall | F1 (micro) | "
                "F1 (macro) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for m in self.models:
                f = m.facts or FactCounts()
                lines.append(
                    f"| {_cell(m.model)} | {m.total} | {m.failed} | {_pct(m.accuracy)} | "
                    f"{_pct(f.precision)} | {_pct(f.recall)} | {_pct(f.f1)} | {_pct(m.macro_f1)} |"
                )
            paths = sorted({p for m in self.models for p in m.by_field})
            lines += ["", "## By field (F1)", ""]
            lines.append("| field | " + " | ".join(_cell(m.model) for m in self.models) + " |")
            lines.append("|---|" + "---:|" * len(self.models))
            for p in paths:
                cells = [_pct(m.by_field.get(p, FactCounts()).f1) for m in self.models]
                lines.append(f"| {_cell(p or '(top level)')} | " + " | ".join(cells) + " |")
        else:
            lines += ["| model | rows | failed | correct | accuracy |", "|---|---:|---:|---:|---:|"]
            for m in self.models:
                lines.append(
                    f"| {_cell(m.model)} | {m.total} | {m.failed} | {m.correct} | "
                    f"{_pct(m.accuracy)} |"
                )
        if chart:
            lines += ["", f"![Accuracy by model]({chart})"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, *, chart: bool = True) -> list[Path]:
        """Write report.md, summary.json and (when `chart`) accuracy.png; return their paths.

        Raises:
            MissingExtraError: `chart` is set and matplotlib is not installed.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        if chart:
            json_scorer = any(m.facts is not None for m in self.models)
            categories = ["exact match", "F1 (micro)"] if json_scorer else ["accuracy"]
            series = {
                m.model: [m.accuracy, (m.facts or FactCounts()).f1] if json_scorer else [m.accuracy]
                for m in self.models
            }
            written.append(
                write_bar_chart(
                    out_dir / CHART_NAME,
                    title=f"{self.source}: {self.scorer} scorer",
                    categories=categories,
                    panels={"by model": series},
                )
            )
        markdown = self.markdown(CHART_NAME if chart else None)
        written.append(_write_text(out_dir / REPORT_NAME, markdown))
        written.append(_write_json(out_dir / SUMMARY_NAME, self.as_dict()))
        return written


def _side_by_side(
    label: str, models: list[ArithmeticModelReport], rows: Iterable[tuple[str, list[Tally]]]
) -> list[str]:
    head = [label, "rows"]
    for m in models:
        head += [f"{_cell(m.model)} strict", f"{_cell(m.model)} lenient"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, tallies in rows:
        cells = [_cell(name), str(tallies[0].total if tallies else 0)]
        for t in tallies:
            cells += [_pct(t.strict_accuracy), _pct(t.lenient_accuracy)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _incomplete(
    models: Iterable[ArithmeticModelReport | FileModelReport], not_run: list[str]
) -> list[str]:
    pending = [(m.model, m.pending) for m in models if m.pending]
    if not pending and not not_run:
        return []
    parts = []
    if pending:
        which = ", ".join(f"{_cell(name)} ({count})" for name, count in pending)
        parts.append(f"rows still unanswered, not scored: {which}.")
    if not_run:
        parts.append(f"models not run yet: {', '.join(_cell(m) for m in not_run)}.")
    return [
        f"**Incomplete:** {' '.join(parts)} Rerun the same command to finish; answers already "
        "received are not requested again.",
        "",
    ]


def _prf(counts: FactCounts) -> dict[str, Any]:
    return {
        "matched": counts.matched,
        "predicted": counts.predicted,
        "expected": counts.expected,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
    }


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _cell(text: str) -> str:
    # A model or field name must not break the Markdown table it sits in.
    return text.replace("|", "\\|").replace("\n", " ")


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    return _write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
