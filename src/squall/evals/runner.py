"""Run an eval: each model's prompts through squall's engine, then score the answers.

Models run one after another, each with its own output file and journal in the eval's
directory, so a rerun of the same eval resumes where it stopped and pays for nothing twice:

    OUT/<model>.jsonl            the engine's output (input fields + response, error, ...)
    OUT/<model>.journal.sqlite   the engine's journal
    OUT/<model>.scored.jsonl     the engine's output plus the score_* columns
    OUT/report.md, summary.json, accuracy.png

Requests go out greedily (temperature 0) unless the config or a flag sets a temperature.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..config import RunConfig, load, require_endpoints
from ..errors import ConfigError, OutputError
from ..inputs import open_input
from ..prompts import check_template
from .arithmetic import DEFAULT_TEMPLATE, SEED_OPERANDS, generate_items
from .chart import have_matplotlib, require_matplotlib
from .report import ArithmeticModelReport, ArithmeticReport, FileModelReport, FileReport
from .rows import RowState, check_references, score_arithmetic_rows, score_file_rows
from .scorers import make_scorer

if TYPE_CHECKING:
    from ..api import RunResult

Progress = Literal["auto", "rich", "plain", "off"]
Announce = Callable[[str, int, int], None]
"""`announce(model, position, count)`: called as each model's run starts (position from 1)."""

_EARLY_END = ("interrupted", "stopped")


@dataclass(frozen=True, slots=True)
class ModelRun:
    """One model's part of an eval: where its files are and how its rows went.

    Attributes:
        failed: rows whose request failed for good (scored as wrong).
        pending: rows with no answer yet (the run stopped early; not scored).
        result: the engine's RunResult, with its account in `result.summary`.
    """

    model: str
    output: Path
    journal: Path
    scored: Path
    rows: int
    failed: int
    pending: int
    result: RunResult


@dataclass(frozen=True, slots=True)
class EvalResult:
    """A finished (or stopped) eval: the report, each model's run, and the report files.

    Attributes:
        skipped: models not started because an earlier model's run ended early.
        chart_skipped: accuracy.png was not drawn because matplotlib is not installed
            (`chart=None`); everything else was written.
    """

    report: ArithmeticReport | FileReport
    runs: tuple[ModelRun, ...]
    files: tuple[Path, ...]
    skipped: tuple[str, ...] = ()
    chart_skipped: bool = False

    @property
    def failed(self) -> int:
        """Rows whose request failed for good, over all models (they count as wrong)."""
        return sum(r.failed for r in self.runs)

    @property
    def status(self) -> str:
        """completed, or the status of the run that ended early: interrupted or stopped."""
        for r in self.runs:
            if r.result.summary.status in _EARLY_END:
                return r.result.summary.status
        return "completed"

    @property
    def exit_code(self) -> int:
        """0 every row of every model answered; 130 interrupted; 1 anything else left."""
        if self.status == "interrupted":
            return 130
        if self.status != "completed" or self.skipped:
            return 1
        return 1 if any(r.failed or r.pending for r in self.runs) else 0


@dataclass(frozen=True, slots=True)
class _Target:
    model: str
    output: Path
    journal: Path
    scored: Path


ScoreRows = Callable[
    [str, Iterable[dict[str, Any]], bool], Iterator[tuple[dict[str, Any], RowState]]
]
"""`score_rows(model, output_rows, complete)` yields each row with score columns and state."""


@dataclass
class _Plan:
    """The parts shared by the sync and async runners: what to send, and how to score it."""

    data: Any
    config: RunConfig
    settings: dict[str, Any]
    targets: list[_Target]
    out_dir: Path
    restart: bool
    progress: Progress | None
    chart: bool
    score_rows: ScoreRows
    report: ArithmeticReport | FileReport
    chart_skipped: bool = False
    runs: list[ModelRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def engine_args(self, target: _Target) -> dict[str, Any]:
        return {
            "output": target.output,
            "config": self.config,
            "journal": target.journal,
            "restart": self.restart,
            "progress": self.progress,
            "model": target.model,
            **self.settings,
        }

    def record(self, target: _Target, result: RunResult) -> bool:
        """Score one model's rows into its scored file; return False if the eval must stop."""
        counts: dict[RowState, int] = {"ok": 0, "failed": 0, "pending": 0}
        complete = result.summary.pending == 0
        tmp = target.scored.with_name(target.scored.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                for row, state in self.score_rows(target.model, result.rows(), complete):
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
                    counts[state] += 1
            tmp.replace(target.scored)
        except OSError as e:
            raise OutputError(
                f"cannot write {target.scored}: {e.strerror or e}; the journal keeps every "
                "answer, so rerunning the eval rewrites it without new requests"
            ) from None
        self.runs.append(
            ModelRun(
                model=target.model,
                output=target.output,
                journal=target.journal,
                scored=target.scored,
                rows=sum(counts.values()),
                failed=counts["failed"],
                pending=counts["pending"],
                result=result,
            )
        )
        # Ctrl-C means stop; "stopped" (no usable key, cost cap) would stop the next model too.
        return result.summary.status not in _EARLY_END

    def finish(self) -> EvalResult:
        done = {r.model for r in self.runs}
        skipped = tuple(t.model for t in self.targets if t.model not in done)
        self.report.not_run = list(skipped)
        files = self.report.write(self.out_dir, chart=self.chart)
        return EvalResult(
            report=self.report,
            runs=tuple(self.runs),
            files=tuple(files),
            skipped=skipped,
            chart_skipped=self.chart_skipped,
        )


def evaluate_arithmetic(
    models: Sequence[str] = (),
    *,
    out_dir: str | Path,
    config: RunConfig | str | Path | None = None,
    n: int = 1000,
    operands: int = SEED_OPERANDS,
    seed: int = 0,
    template: str | None = None,
    restart: bool = False,
    progress: Progress | None = None,
    chart: bool | None = None,
    announce: Announce | None = None,
) -> EvalResult:
    """Return the arithmetic eval of `models`, run through `squall.api.run` one model at a time.

    Args:
        models: model names as the endpoint knows them; none means the config's `model`.
        out_dir: where outputs, journals, scored rows and the report go (a rerun resumes).
        config: a RunConfig, a TOML path, or None for the environment's endpoint.
        n: how many expressions.
        operands: numbers per expression (the seed's set has 3).
        seed: fixes the set.
        template: the prompt, over the item's fields (`{expression}`, ...); default the
            config's template, else the bare expression.
        restart: throw away the journals and start again.
        progress: the engine's progress display: auto, rich, plain or off (default: the
            config's).
        chart: draw accuracy.png: True needs matplotlib; None (default) draws it when
            matplotlib is installed, else skips only the chart (`EvalResult.chart_skipped`).
        announce: called as each model starts.

    Raises:
        ConfigError: no model, a model named twice, bad `n`/`operands`/template, or
            no matplotlib with `chart=True` (MissingExtraError), all before anything is sent.
        SquallError: whatever `squall.api.run` raises.
    """
    from .. import api

    plan = _arithmetic_plan(
        models, out_dir, config, n, operands, seed, template, restart, progress, chart
    )
    for i, target in enumerate(plan.targets, 1):
        if announce is not None:
            announce(target.model, i, len(plan.targets))
        if not plan.record(target, api.run(plan.data, **plan.engine_args(target))):
            break
    return plan.finish()


async def aevaluate_arithmetic(
    models: Sequence[str] = (),
    *,
    out_dir: str | Path,
    config: RunConfig | str | Path | None = None,
    n: int = 1000,
    operands: int = SEED_OPERANDS,
    seed: int = 0,
    template: str | None = None,
    restart: bool = False,
    progress: Progress | None = None,
    chart: bool | None = None,
    announce: Announce | None = None,
) -> EvalResult:
    """Return the arithmetic eval of `models` from inside a running event loop.

    Same arguments and errors as `evaluate_arithmetic`; runs through `squall.api.arun`.
    """
    from .. import api

    plan = _arithmetic_plan(
        models, out_dir, config, n, operands, seed, template, restart, progress, chart
    )
    for i, target in enumerate(plan.targets, 1):
        if announce is not None:
            announce(target.model, i, len(plan.targets))
        if not plan.record(target, await api.arun(plan.data, **plan.engine_args(target))):
            break
    return plan.finish()


def evaluate_file(
    data: Any,
    models: Sequence[str] = (),
    *,
    reference: str,
    out_dir: str | Path,
    scorer: str = "exact",
    pattern: str | None = None,
    tolerance: float = 1e-9,
    config: RunConfig | str | Path | None = None,
    restart: bool = False,
    progress: Progress | None = None,
    chart: bool | None = None,
    announce: Announce | None = None,
) -> EvalResult:
    """Return the eval of `models` on a user's rows, scored against their `reference` column.

    Args:
        data: what `squall.run` takes: a path (JSONL, CSV, Parquet), a DataFrame or a list
            of dicts. Each row gives its prompt by `prompt`, `messages`, or the config's
            template, as in `squall run`.
        models: model names; none means the config's `model`.
        reference: the column holding the right answer.
        out_dir: where outputs, journals, scored rows and the report go (a rerun resumes).
        scorer: exact, number, contains, regex or json (see `squall.evals.scorers`).
        pattern: for the regex scorer, the expression that finds the answer.
        tolerance: for the number scorer, the largest absolute difference counted right.
        config: a RunConfig, a TOML path, or None for the environment's endpoint.
        restart: throw away the journals and start again.
        progress: the engine's progress display: auto, rich, plain or off (default: the
            config's).
        chart: draw accuracy.png: True needs matplotlib; None (default) draws it when
            matplotlib is installed, else skips only the chart (`EvalResult.chart_skipped`).
        announce: called as each model starts.

    Raises:
        ConfigError: no model, a model named twice, a bad scorer or pattern, or no
            matplotlib with `chart=True` (MissingExtraError), before anything is sent.
        InputError: the reference column is missing, or a reference the scorer cannot use
            (naming file, line and column), before anything is sent.
        SquallError: whatever `squall.api.run` raises.
    """
    from .. import api

    plan = _file_plan(
        data,
        models,
        reference,
        out_dir,
        scorer,
        pattern,
        tolerance,
        config,
        restart,
        progress,
        chart,
    )
    for i, target in enumerate(plan.targets, 1):
        if announce is not None:
            announce(target.model, i, len(plan.targets))
        if not plan.record(target, api.run(plan.data, **plan.engine_args(target))):
            break
    return plan.finish()


async def aevaluate_file(
    data: Any,
    models: Sequence[str] = (),
    *,
    reference: str,
    out_dir: str | Path,
    scorer: str = "exact",
    pattern: str | None = None,
    tolerance: float = 1e-9,
    config: RunConfig | str | Path | None = None,
    restart: bool = False,
    progress: Progress | None = None,
    chart: bool | None = None,
    announce: Announce | None = None,
) -> EvalResult:
    """Return the eval of `models` on a user's rows from inside a running event loop.

    Same arguments and errors as `evaluate_file`; runs through `squall.api.arun`.
    """
    from .. import api

    plan = _file_plan(
        data,
        models,
        reference,
        out_dir,
        scorer,
        pattern,
        tolerance,
        config,
        restart,
        progress,
        chart,
    )
    for i, target in enumerate(plan.targets, 1):
        if announce is not None:
            announce(target.model, i, len(plan.targets))
        if not plan.record(target, await api.arun(plan.data, **plan.engine_args(target))):
            break
    return plan.finish()


def _draw_chart(chart: bool | None) -> bool:
    """Return whether to draw the chart: None means "when matplotlib is installed".

    Raises:
        MissingExtraError: `chart` is True and matplotlib is not installed.
    """
    if chart is None:
        return have_matplotlib()
    if chart:
        require_matplotlib()
    return chart


def model_slug(model: str) -> str:
    """Return `model` as a file-name stem: anything but letters, digits, `.`, `_`, `-` -> `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"


def _arithmetic_plan(
    models: Sequence[str],
    out_dir: str | Path,
    config: RunConfig | str | Path | None,
    n: int,
    operands: int,
    seed: int,
    template: str | None,
    restart: bool,
    progress: Progress | None,
    chart: bool | None,
) -> _Plan:
    cfg, models = _resolve_config(config, models)
    chosen = template or cfg.template or DEFAULT_TEMPLATE
    items = generate_items(n, operands=operands, seed=seed)
    rows = [item.as_row() for item in items]
    check_template(chosen, list(rows[0]), source_name="the arithmetic set")
    draw = _draw_chart(chart)
    out = Path(out_dir)
    targets = _targets(models, out)
    report = ArithmeticReport(n=n, operands=operands, seed=seed, template=chosen)

    def score_rows(
        model: str, output: Iterable[dict[str, Any]], complete: bool
    ) -> Iterator[tuple[dict[str, Any], RowState]]:
        model_report = ArithmeticModelReport(model=model)
        report.models.append(model_report)
        return score_arithmetic_rows(items, output, model_report, complete=complete)

    return _Plan(
        data=rows,
        config=cfg,
        settings=_settings(cfg, template=chosen),
        targets=targets,
        out_dir=out,
        restart=restart,
        progress=progress,
        chart=draw,
        chart_skipped=chart is None and not draw,
        score_rows=score_rows,
        report=report,
    )


def _file_plan(
    data: Any,
    models: Sequence[str],
    reference: str,
    out_dir: str | Path,
    scorer_name: str,
    pattern: str | None,
    tolerance: float,
    config: RunConfig | str | Path | None,
    restart: bool,
    progress: Progress | None,
    chart: bool | None,
) -> _Plan:
    cfg, models = _resolve_config(config, models)
    scorer = make_scorer(scorer_name, pattern=pattern, tolerance=tolerance)
    if isinstance(data, Iterator):
        # A one-shot iterator would be used up by the check below and by each model's run.
        data = list(data)
    check_references(data, reference, scorer)
    draw = _draw_chart(chart)
    out = Path(out_dir)
    targets = _targets(models, out)
    name = str(data) if isinstance(data, (str, Path)) else open_input(data).name
    report = FileReport(source=name, reference=reference, scorer=scorer_name)

    def score_rows(
        model: str, output: Iterable[dict[str, Any]], complete: bool
    ) -> Iterator[tuple[dict[str, Any], RowState]]:
        model_report = FileModelReport(model=model)
        report.models.append(model_report)
        return score_file_rows(scorer, reference, output, model_report, complete=complete)

    return _Plan(
        data=data,
        config=cfg,
        settings=_settings(cfg),
        targets=targets,
        out_dir=out,
        restart=restart,
        progress=progress,
        chart=draw,
        chart_skipped=chart is None and not draw,
        score_rows=score_rows,
        report=report,
    )


def _resolve_config(
    config: RunConfig | str | Path | None, models: Sequence[str]
) -> tuple[RunConfig, list[str]]:
    """Return the config to run with and the models to evaluate."""
    cfg = config if isinstance(config, RunConfig) else load(config)
    require_endpoints(cfg)
    if cfg.api == "embeddings":
        raise ConfigError(
            "api is embeddings: an eval scores answers, so it sends chat or completions"
        )
    named = {ep.model for ep in cfg.endpoints if ep.model}
    if models:
        if named:
            # An endpoint's own `model` wins over the run's, so every model's run would send
            # that one name: the eval's --model list replaces them.
            endpoints = tuple(ep.model_copy(update={"model": None}) for ep in cfg.endpoints)
            cfg = cfg.model_copy(update={"endpoints": endpoints})
        return cfg, list(models)
    if len(named) > 1 or (named and cfg.model and named != {cfg.model}):
        raise ConfigError(
            f"the config's endpoints name different models ({', '.join(sorted(named))}): "
            "pass --model NAME for each model to evaluate"
        )
    chosen = cfg.model or next(iter(named), None)
    if not chosen:
        raise ConfigError("no model to evaluate: pass --model NAME (once per model)")
    return cfg, [chosen]


def _settings(cfg: RunConfig, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = dict(extra)
    if cfg.temperature is None:
        # Scores should not depend on sampling luck: greedy unless the user asked otherwise.
        settings["temperature"] = 0.0
    return settings


def _targets(models: Sequence[str], out: Path) -> list[_Target]:
    seen: set[str] = set()
    stems: set[str] = set()
    targets = []
    for model in models:
        if model in seen:
            raise ConfigError(f"--model {model!r} is given twice: name each model once")
        seen.add(model)
        stem = model_slug(model)
        base, k = stem, 2
        while stem.casefold() in stems:
            # Two names may map to one file stem ("a/b" and "a_b"); keep their files apart.
            stem, k = f"{base}-{k}", k + 1
        stems.add(stem.casefold())
        targets.append(
            _Target(
                model=model,
                output=out / f"{stem}.jsonl",
                journal=out / f"{stem}.journal.sqlite",
                scored=out / f"{stem}.scored.jsonl",
            )
        )
    return targets
