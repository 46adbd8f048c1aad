"""Accuracy tables, Markdown, summary.json and the PNG chart, built from scored rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from squall.errors import MissingExtraError
from squall.evals.report import (
    ArithmeticModelReport,
    ArithmeticReport,
    FileModelReport,
    FileReport,
)
from squall.evals.scorers import make_scorer, score_arithmetic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _arithmetic_report() -> ArithmeticReport:
    report = ArithmeticReport(n=4, operands=3, seed=0, template="{expression}")
    rows = [  # (operators, operands, answer, expected, failed)
        ("+", 3, "5", 5, False),
        ("+x", 3, "the answer is 9", 9, False),
        ("-x", 2, "wrong", 1, False),
        ("-", 2, None, 4, True),
    ]
    for name, wrong_from in (("base", 0), ("lora|v2", 99)):
        m = ArithmeticModelReport(model=name)
        for i, (ops, k, answer, expected, failed) in enumerate(rows):
            given = answer if i < wrong_from else "0"
            m.add(operators=ops, operands=k, score=score_arithmetic(given, expected), failed=failed)
        report.models.append(m)
    return report


def test_tallies_overall_by_operator_and_operand_count() -> None:
    report = _arithmetic_report()
    lora = report.models[1]
    assert (lora.overall.total, lora.overall.strict, lora.overall.lenient) == (4, 1, 2)
    assert lora.failed == 1
    # An expression counts under each operator it has.
    assert lora.by_operator["+"].total == 2 and lora.by_operator["+"].lenient == 2
    assert lora.by_operator["x"].total == 2 and lora.by_operator["x"].strict == 0
    assert lora.by_operator["-"].total == 2 and lora.by_operator["-"].lenient == 0
    assert lora.by_operands[3].lenient_accuracy == 1.0
    assert lora.by_operands[2].lenient_accuracy == 0.0
    base = report.models[0]
    assert base.overall.lenient == 0


def test_markdown_is_side_by_side() -> None:
    md = _arithmetic_report().markdown()
    assert "| base | 4 | 1 | 0.0% | 0.0% |" in md
    assert "| lora\\|v2 | 4 | 1 | 25.0% | 50.0% |" in md  # a | in a name is escaped
    assert "| operator | rows | base strict | base lenient | lora\\|v2 strict |" in md
    assert "| + | 2 | 0.0% | 0.0% | 50.0% | 100.0% |" in md
    assert "| 3 | 2 |" in md and "| 2 | 2 |" in md
    assert "![Accuracy by operator and model](accuracy.png)" in md
    assert "Incomplete" not in md


def test_pending_rows_are_reported_apart() -> None:
    report = _arithmetic_report()
    report.models[0].add_pending()
    md = report.markdown()
    assert "**Incomplete:**" in md and "base (1)" in md
    assert report.as_dict()["models"][0]["pending"] == 1


def test_write_files(tmp_path: Path) -> None:
    written = _arithmetic_report().write(tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == ["accuracy.png", "report.md", "summary.json"]
    assert (tmp_path / "out" / "accuracy.png").read_bytes().startswith(PNG_MAGIC)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    lora = summary["models"][1]
    assert lora["lenient_accuracy"] == 0.5
    assert lora["by_operator"]["x"]["rows"] == 2
    assert summary["eval"] == "arithmetic" and summary["n"] == 4


def test_write_without_chart(tmp_path: Path) -> None:
    written = _arithmetic_report().write(tmp_path, chart=False)
    assert sorted(p.name for p in written) == ["report.md", "summary.json"]
    assert "accuracy.png" not in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_missing_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingExtraError) as e:
        _arithmetic_report().write(tmp_path)
    assert 'pip install "squall[eval]"' in str(e.value)
    assert "matplotlib" in str(e.value)


def test_file_report_with_json_scorer(tmp_path: Path) -> None:
    scorer = make_scorer("json")
    report = FileReport(source="ner.jsonl", reference="label", scorer="json")
    for model, answers in (
        ("base", ["nothing", '{"per": ["a"]}']),
        ("ner", ['{"per": ["a"], "loc": ["b"]}', '{"per": ["a"]}']),
    ):
        m = FileModelReport(model=model)
        for answer, ref in zip(
            answers, [{"per": ["a"], "loc": ["b"]}, {"per": ["a"]}], strict=True
        ):
            m.add(scorer(answer, ref), failed=False)
        report.models.append(m)
    base, ner = report.models
    assert (base.correct, ner.correct) == (1, 2)
    assert base.facts is not None and base.facts.recall == pytest.approx(1 / 3)
    assert base.macro_f1 == pytest.approx(0.5)
    assert base.by_field["loc"].recall == 0.0
    md = report.markdown()
    assert "## By field (F1)" in md
    assert "| loc | 0.0% | 100.0% |" in md
    report.write(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["models"][1]["micro"]["f1"] == 1.0
    assert summary["models"][0]["by_field"]["per"]["precision"] == 1.0
    assert (tmp_path / "accuracy.png").read_bytes().startswith(PNG_MAGIC)


def test_file_report_plain_scorer_markdown() -> None:
    report = FileReport(source="qa.csv", reference="answer", scorer="exact")
    m = FileModelReport(model="m")
    exact = make_scorer("exact")
    m.add(exact("a", "a"), failed=False)
    m.add(exact(None, "b"), failed=True)
    report.models.append(m)
    md = report.markdown(chart=None)
    assert "| m | 2 | 1 | 1 | 50.0% |" in md
    assert "By field" not in md and "accuracy.png" not in md
