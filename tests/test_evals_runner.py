"""Evals run through squall's real engine against the provider simulator on 127.0.0.1.

The simulator answers an arithmetic prompt with its exact value, so a faithful eval scores
100%; a template that shifts every result shows the scoring sees wrong answers.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.config import EndpointConfig, KeyConfig, RunConfig
from squall.errors import ConfigError, InputError, MissingExtraError
from squall.evals.runner import aevaluate_arithmetic, evaluate_arithmetic, evaluate_file
from squall.redact import ApiKey
from squall.simulator import SimConfig, SimKey, Simulator

KEY = "sk-evaltest-0123456789abcdef"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimConfig(keys=(SimKey(key=KEY),), models=("base", "arith"))) as s:
        yield s


def _config(sim: Simulator, model: str | None = None) -> RunConfig:
    # Declared unlimited: left out, squall would probe for the limit and start slowly.
    endpoint = EndpointConfig(
        name="sim",
        base_url=sim.base_url,
        keys=(KeyConfig(key=ApiKey(KEY)),),
        model=model,
        rpm=float("inf"),
        tpm=float("inf"),
    )
    return RunConfig(endpoints=(endpoint,), progress="off")


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_arithmetic_eval_scores_exact_answers_100_percent(sim: Simulator, tmp_path: Path) -> None:
    result = evaluate_arithmetic(
        ["base", "arith"], out_dir=tmp_path, config=_config(sim), n=40, seed=5, progress="off"
    )
    assert result.exit_code == 0 and result.status == "completed" and result.failed == 0
    assert [r.model for r in result.runs] == ["base", "arith"]
    assert sorted({e.model for e in sim.ledger()}) == ["arith", "base"]
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    for m in summary["models"]:
        assert m["rows"] == 40
        assert m["strict_accuracy"] == 1.0 and m["lenient_accuracy"] == 1.0
        assert sum(t["rows"] for t in m["by_operands"].values()) == 40
    for run in result.runs:
        rows = _rows(run.scored)
        assert len(rows) == 40
        assert all(r["score_strict"] and r["score_parsed"] == r["expected"] for r in rows)
        assert all(r["response"] == str(r["expected"]) for r in rows)
        assert run.output.is_file() and run.journal.is_file()
        assert "score_strict" not in _rows(run.output)[0]  # the engine's own file is untouched
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| base | 40 | 0 | 100.0% | 100.0% |" in report
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    # No file the eval wrote holds the key.
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_rerun_resumes_without_new_requests(sim: Simulator, tmp_path: Path) -> None:
    kwargs = dict(out_dir=tmp_path, config=_config(sim), n=25, progress="off")
    evaluate_arithmetic(["base"], **kwargs)  # type: ignore[arg-type]  # test-only kwargs bundle
    served = sim.served_count()
    again = evaluate_arithmetic(["base"], **kwargs)  # type: ignore[arg-type]  # same bundle
    assert sim.served_count() == served == 25
    assert again.report.models[0].overall.strict == 25  # type: ignore[union-attr]  # arithmetic


def test_a_template_that_breaks_answers_is_scored_wrong(sim: Simulator, tmp_path: Path) -> None:
    # "{id} + {expression}" makes the simulator answer id + expected: right only for id 0.
    result = evaluate_arithmetic(
        ["base"],
        out_dir=tmp_path,
        config=_config(sim),
        n=20,
        template="{id} + {expression}",
        progress="off",
        chart=False,
    )
    rows = _rows(result.runs[0].scored)
    assert [r["score_strict"] for r in rows] == [True] + [False] * 19
    assert rows[3]["score_parsed"] == 3 + rows[3]["expected"]  # type: ignore[operator]  # ints
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["models"][0]["strict_accuracy"] == pytest.approx(1 / 20)
    assert summary["template"] == "{id} + {expression}"
    assert not (tmp_path / "accuracy.png").exists()


def test_unknown_template_field_fails_before_sending(sim: Simulator, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="question"):
        evaluate_arithmetic(
            ["base"], out_dir=tmp_path, config=_config(sim), n=5, template="{question}"
        )
    assert sim.ledger() == []


def test_models_are_required_and_distinct(sim: Simulator, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model"):
        evaluate_arithmetic([], out_dir=tmp_path, config=_config(sim), n=5)
    with pytest.raises(ConfigError, match="twice"):
        evaluate_arithmetic(["a", "a"], out_dir=tmp_path, config=_config(sim), n=5)
    assert sim.ledger() == []


def test_eval_models_replace_an_endpoints_own_model(sim: Simulator, tmp_path: Path) -> None:
    cfg = _config(sim, model="fixed")
    evaluate_arithmetic(["base", "a/b"], out_dir=tmp_path, config=cfg, n=3, chart=False)
    assert sorted({e.model for e in sim.ledger()}) == ["a/b", "base"]
    assert (tmp_path / "a_b.scored.jsonl").is_file()
    # Without --model the endpoint's model is the one evaluated.
    evaluate_arithmetic([], out_dir=tmp_path / "fixed", config=cfg, n=3, chart=False)
    assert "fixed" in {e.model for e in sim.ledger()}


async def test_async_eval_inside_a_running_loop(sim: Simulator, tmp_path: Path) -> None:
    result = await aevaluate_arithmetic(
        ["base"], out_dir=tmp_path, config=_config(sim), n=10, operands=2, chart=False
    )
    assert result.exit_code == 0
    model = result.report.models[0]
    assert model.overall.lenient == 10  # type: ignore[union-attr]  # arithmetic report
    assert list(model.by_operands) == [2]  # type: ignore[union-attr]  # arithmetic report


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_file_eval_scores_and_counts_failures(sim: Simulator, tmp_path: Path) -> None:
    data = _write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"prompt": "what is 2 + 3?", "answer": "5"},
            {"prompt": "what is 6 x 7?", "answer": "42"},
            {"prompt": "what is 10 - 4?", "answer": "7"},  # a wrong reference: scored wrong
            {"prompt": "SQUALL_BAD_REQUEST 1 + 1", "answer": "2"},  # the request fails (400)
        ],
    )
    result = evaluate_file(
        data,
        ["base"],
        reference="answer",
        scorer="number",
        out_dir=tmp_path / "out",
        config=_config(sim),
    )
    run = result.runs[0]
    assert (run.rows, run.failed, run.pending) == (4, 1, 0)
    assert result.exit_code == 1  # a row failed for good
    rows = _rows(run.scored)
    assert [r["score_correct"] for r in rows] == [True, True, False, False]
    assert rows[3]["error"] is not None
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["models"][0]["accuracy"] == 0.5 and summary["models"][0]["failed"] == 1


def test_file_eval_with_template_and_regex_pattern(sim: Simulator, tmp_path: Path) -> None:
    data = _write_jsonl(
        tmp_path / "t.jsonl", [{"q": "1 + 1", "gold": "2"}, {"q": "3 x 3", "gold": "9"}]
    )
    cfg = _config(sim).model_copy(update={"template": "compute {q}"})
    result = evaluate_file(
        data,
        ["base"],
        reference="gold",
        scorer="regex",
        pattern=r"(\d+)",
        config=cfg,
        out_dir=tmp_path / "out",
        chart=False,
    )
    assert result.exit_code == 0
    assert result.report.models[0].accuracy == 1.0  # type: ignore[union-attr]  # file report


def test_file_eval_checks_references_before_sending(sim: Simulator, tmp_path: Path) -> None:
    data = _write_jsonl(
        tmp_path / "bad.jsonl",
        [{"prompt": "1 + 1", "answer": "2"}, {"prompt": "2 + 2", "answer": "four"}],
    )
    with pytest.raises(InputError) as e:
        evaluate_file(
            data,
            ["base"],
            reference="answer",
            scorer="number",
            out_dir=tmp_path / "o",
            config=_config(sim),
        )
    assert e.value.line == 2 and e.value.field == "answer" and "bad.jsonl" in str(e.value)
    with pytest.raises(InputError, match="columns: prompt, answer"):
        evaluate_file(
            data, ["base"], reference="label", out_dir=tmp_path / "o", config=_config(sim)
        )
    assert sim.ledger() == []


def test_file_eval_json_scorer_on_in_memory_rows(sim: Simulator, tmp_path: Path) -> None:
    # The simulator cannot write JSON, so every answer scores 0 recall: the numbers still add up.
    rows = [
        {"prompt": "find the people", "label": {"person": ["a", "b"]}},
        {"prompt": "find the places", "label": '{"loc": ["x"]}'},
    ]
    result = evaluate_file(
        rows, ["base"], reference="label", scorer="json", out_dir=tmp_path, config=_config(sim)
    )
    model = result.report.models[0]
    assert model.facts is not None and model.facts.expected == 3  # type: ignore[union-attr]
    assert model.facts.recall == 0.0  # type: ignore[union-attr]  # file report
    scored = _rows(result.runs[0].scored)
    assert scored[0]["score_f1"] == 0.0 and scored[0]["score_extracted"] is None


def test_a_stopped_run_stops_the_eval_and_says_so(tmp_path: Path) -> None:
    dead = "sk-evaldead-0123456789abcdef"
    with Simulator(SimConfig(keys=(SimKey(key=dead, dead=True),))) as s:
        endpoint = EndpointConfig(
            name="sim", base_url=s.base_url, keys=(KeyConfig(key=ApiKey(dead)),), rpm=float("inf")
        )
        cfg = RunConfig(endpoints=(endpoint,), progress="off")
        result = evaluate_arithmetic(["a", "b"], out_dir=tmp_path, config=cfg, n=6, chart=False)
        assert {e.model for e in s.ledger()} == {"a"}  # b never started
    assert result.status == "stopped" and result.exit_code == 1
    assert result.skipped == ("b",)
    run = result.runs[0]
    assert (run.rows, run.pending, run.failed) == (6, 6, 0)
    assert all(r["score_strict"] is None for r in _rows(run.scored))
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "**Incomplete:**" in report and "a (6)" in report and "not run yet: b" in report
    assert dead.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_a_larger_n_sends_only_the_new_expressions(sim: Simulator, tmp_path: Path) -> None:
    evaluate_arithmetic(["base"], out_dir=tmp_path, config=_config(sim), n=5, chart=False)
    result = evaluate_arithmetic(["base"], out_dir=tmp_path, config=_config(sim), n=9, chart=False)
    assert sim.served_count() == 9
    assert result.runs[0].rows == 9 and result.exit_code == 0


def test_without_matplotlib_the_default_skips_only_the_chart(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingExtraError, match="matplotlib"):
        evaluate_arithmetic(["base"], out_dir=tmp_path / "asked", config=_config(sim), chart=True)
    assert sim.served_count() == 0  # asked for the chart: refused before anything is sent
    result = evaluate_arithmetic(["base"], out_dir=tmp_path, config=_config(sim), n=4)
    assert result.chart_skipped and result.exit_code == 0
    assert sorted(p.name for p in result.files) == ["report.md", "summary.json"]
    assert not (tmp_path / "accuracy.png").exists()
