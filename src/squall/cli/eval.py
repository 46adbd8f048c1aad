"""`squall eval arithmetic` (the seed's set) and `squall eval FILE` (a user's own set).

Both run each `--model` through squall's engine in turn (journal, resume, limits, progress),
score the answers, and write per-row scores, report.md, summary.json and accuracy.png to
`--out`. Rerunning the same command resumes; nothing already answered is requested again.
Without matplotlib (a plain `pip install squall`) only the chart is skipped, in one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..config import RunConfig, load, require_endpoints
from ..errors import ConfigError, InputChangedError, SquallError
from .console import err, fail, out
from .help import Command, Group

if TYPE_CHECKING:
    from ..evals.runner import EvalResult, Progress

BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", help="The endpoint's base URL, e.g. http://127.0.0.1:8000/v1."),
]
Config = Annotated[
    Path | None, typer.Option("-c", "--config", help="TOML config file (endpoints, keys, limits).")
]
Models = Annotated[
    list[str] | None,
    typer.Option("--model", help="A model to evaluate; repeat for side-by-side models."),
]
KeyEnv = Annotated[
    list[str] | None,
    typer.Option(
        "--key-env",
        help="Variable holding the key (default: SQUALL_API_KEY, OPENAI_API_KEY or API_KEY; "
        ".env is read).",
    ),
]
Rpm = Annotated[float | None, typer.Option("--rpm", help="Requests per minute per key.")]
Tpm = Annotated[float | None, typer.Option("--tpm", help="Tokens per minute per key.")]
Concurrency = Annotated[
    int | None, typer.Option("--concurrency", help="Requests in flight per key.")
]
Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="chat (default) or completions: a base model or LoRA without a chat template.",
    ),
]
EVAL_APIS = ("chat", "completions")
System = Annotated[str | None, typer.Option("--system", help="System prompt.")]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens", help="Answer length cap.")]
Temperature = Annotated[
    float | None, typer.Option("--temperature", help="Sampling temperature (default 0: greedy).")
]
MaxCost = Annotated[
    float | None, typer.Option("--max-cost", help="Stop before the spend (USD) passes this.")
]
Out = Annotated[
    Path | None, typer.Option("-o", "--out", help="Directory for outputs, journals and report.")
]
Restart = Annotated[bool, typer.Option("--restart", help="Discard the journals; start fresh.")]
ProgressOpt = Annotated[str | None, typer.Option("--progress", help="auto, rich, plain or off.")]
NoChart = Annotated[
    bool, typer.Option("--no-chart", help="Skip accuracy.png (drawn when matplotlib is installed).")
]

# `eval arithmetic`
Count = Annotated[int, typer.Option("-n", help="How many expressions.")]
Operands = Annotated[
    int, typer.Option("--operands", help="Numbers per expression (the seed's set: 3).")
]
Seed = Annotated[int, typer.Option("--seed", help="Fixes the set of expressions.")]
ItemTemplate = Annotated[
    str | None,
    typer.Option("--template", help="Prompt over the item, e.g. '计算 {expression} 的结果'."),
]
# `eval FILE`
SetFile = Annotated[Path, typer.Argument(help="Your set: .jsonl, .csv or .parquet.")]
Reference = Annotated[str, typer.Option("--reference", help="The column holding the right answer.")]
Scorer = Annotated[str, typer.Option("--scorer", help="exact, number, contains, regex or json.")]
Pattern = Annotated[
    str | None,
    typer.Option("--pattern", help="regex scorer: finds the answer (group 'answer' or 1)."),
]
Tolerance = Annotated[
    float, typer.Option("--tolerance", help="number scorer: largest difference counted right.")
]
RowTemplate = Annotated[
    str | None, typer.Option("--template", help="Prompt template over the row's columns.")
]


class _EvalGroup(Group):
    """`squall eval` whose first word, when not a sub-command, is the FILE of `eval file`."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        """Return `file` and all of `args` when `args[0]` names no sub-command."""
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "file", self.commands["file"], args
        return super().resolve_command(ctx, args)


eval_app = typer.Typer(
    cls=_EvalGroup,
    name="eval",
    help="Score models: the seed's arithmetic set (`squall eval arithmetic`) or your own "
    "file (`squall eval FILE --reference COLUMN`).",
    no_args_is_help=True,
    add_completion=False,
)


def register(app: typer.Typer) -> None:
    """Add `squall eval` (with `arithmetic` and `FILE`) to `app`."""
    app.add_typer(eval_app, name="eval")


@eval_app.command("arithmetic", cls=Command)
def arithmetic_cmd(
    base_url: BaseUrl = None,
    config: Config = None,
    model: Models = None,
    key_env: KeyEnv = None,
    api: Api = None,
    n: Count = 1000,
    operands: Operands = 3,
    seed: Seed = 0,
    template: ItemTemplate = None,
    out_dir: Out = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    system: System = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    max_cost: MaxCost = None,
    restart: Restart = False,
    progress: ProgressOpt = None,
    no_chart: NoChart = False,
) -> None:
    """Score models on the seed's arithmetic expressions (1 to 100, + - x), strict and lenient.

    Writes OUT/<model>.scored.jsonl, report.md, summary.json and accuracy.png. Default OUT:
    evals/arithmetic-n<N>-ops<OPERANDS>-seed<SEED>.
    """
    from ..evals.runner import evaluate_arithmetic

    try:
        cfg = _load_config(
            config,
            base_url,
            key_env,
            rpm,
            tpm,
            concurrency,
            system,
            max_tokens,
            temperature,
            max_cost,
            None,
            api=api,
        )
        result = evaluate_arithmetic(
            model or (),
            out_dir=out_dir or Path("evals") / f"arithmetic-n{n}-ops{operands}-seed{seed}",
            config=cfg,
            n=n,
            operands=operands,
            seed=seed,
            template=template,
            restart=restart,
            progress=_progress(progress),
            chart=False if no_chart else None,
            announce=_announce,
        )
    except SquallError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        raise _interrupted() from None
    _finish(result)


@eval_app.command("file", cls=Command)
def file_cmd(
    file: SetFile,
    reference: Reference,
    scorer: Scorer = "exact",
    pattern: Pattern = None,
    tolerance: Tolerance = 1e-9,
    base_url: BaseUrl = None,
    config: Config = None,
    model: Models = None,
    key_env: KeyEnv = None,
    api: Api = None,
    template: RowTemplate = None,
    out_dir: Out = None,
    rpm: Rpm = None,
    tpm: Tpm = None,
    concurrency: Concurrency = None,
    system: System = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    max_cost: MaxCost = None,
    restart: Restart = False,
    progress: ProgressOpt = None,
    no_chart: NoChart = False,
) -> None:
    """Score models on your FILE against its --reference column (run as `squall eval FILE`).

    Each row gives its prompt by `prompt`, `messages` or --template, as in `squall run`.
    Writes OUT/<model>.scored.jsonl, report.md, summary.json and accuracy.png. Default OUT:
    evals/<FILE's name>.
    """
    from ..evals.runner import evaluate_file

    try:
        cfg = _load_config(
            config,
            base_url,
            key_env,
            rpm,
            tpm,
            concurrency,
            system,
            max_tokens,
            temperature,
            max_cost,
            template,
            api=api,
        )
        result = evaluate_file(
            str(file),
            model or (),
            reference=reference,
            out_dir=out_dir or Path("evals") / (file.name.split(".")[0] or "file"),
            scorer=scorer,
            pattern=pattern,
            tolerance=tolerance,
            config=cfg,
            restart=restart,
            progress=_progress(progress),
            chart=False if no_chart else None,
            announce=_announce,
        )
    except SquallError as e:
        raise _fail(e) from None
    except KeyboardInterrupt:
        raise _interrupted() from None
    _finish(result)


def _load_config(
    path: Path | None,
    base_url: str | None,
    key_env: list[str] | None,
    rpm: float | None,
    tpm: float | None,
    concurrency: int | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    max_cost: float | None,
    template: str | None,
    *,
    api: str | None = None,
) -> RunConfig:
    if api is not None and api not in EVAL_APIS:
        raise ConfigError(f"--api {api!r}: squall eval sends {' or '.join(EVAL_APIS)}")
    cfg = load(
        path,
        overrides={
            "base_url": base_url,
            "key_env": key_env,
            "rpm": rpm,
            "tpm": tpm,
            "concurrency": concurrency,
            "system": system,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "max_cost": max_cost,
            "template": template,
            "api": api,
        },
    )
    require_endpoints(cfg)
    return cfg


def _progress(value: str | None) -> Progress | None:
    if value is None:
        return None
    modes: dict[str, Progress] = {"auto": "auto", "rich": "rich", "plain": "plain", "off": "off"}
    if value not in modes:
        raise fail(ConfigError(f"--progress {value!r}: use auto, rich, plain or off"))
    return modes[value]


def _fail(error: SquallError) -> typer.Exit:
    exit_ = fail(error)
    if isinstance(error, InputChangedError):
        # The engine's hint names `squall run`'s --journal; the eval picks journals from --out.
        err.print(
            "For squall eval: pass --restart to discard this eval's journals, or choose "
            "another --out.",
            soft_wrap=True,
        )
    return exit_


def _announce(model: str, position: int, count: int) -> None:
    err.print(f"[bold]model {position}/{count}:[/] {model}", soft_wrap=True)


def _interrupted() -> typer.Exit:
    err.print(f"[yellow]interrupted.[/] Resume with: {_command_line()}", soft_wrap=True)
    return typer.Exit(130)


def _command_line() -> str:
    return "squall " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])


def _finish(result: EvalResult) -> None:
    from ..evals.report import ArithmeticReport

    for run in result.runs:
        err.print(f"[bold]{run.model}[/]", soft_wrap=True)
        err.print(run.result.summary)
    report = result.report
    table = Table(title="Accuracy", show_edge=False)
    if isinstance(report, ArithmeticReport):
        for col in ("model", "rows", "failed", "strict", "lenient"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for m in report.models:
            table.add_row(
                m.model,
                str(m.overall.total),
                str(m.failed),
                f"{m.overall.strict_accuracy:.1%}",
                f"{m.overall.lenient_accuracy:.1%}",
            )
    else:
        for col in ("model", "rows", "failed", "accuracy", "F1"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for f in report.models:
            f1 = "" if f.facts is None else f"{f.facts.f1:.1%}"
            table.add_row(f.model, str(f.total), str(f.failed), f"{f.accuracy:.1%}", f1)
    out.print(table)
    for path in result.files:
        out.print(f"wrote {path}", soft_wrap=True, highlight=False)
    if result.chart_skipped:
        from ..evals.chart import CHART_HINT

        err.print(
            f"chart skipped (accuracy.png needs matplotlib): {escape(CHART_HINT)}", soft_wrap=True
        )
    status = result.status
    if status == "interrupted":
        raise _interrupted()
    if status == "stopped" or result.skipped:
        err.print(
            f"[yellow]stopped early[/]; not run: {', '.join(result.skipped) or 'none'}. "
            f"Resume with: {_command_line()}",
            soft_wrap=True,
        )
    elif result.failed:
        err.print(
            f"{result.failed} row(s) failed for good and count as wrong (see the `error` "
            "column of each scored file)",
            soft_wrap=True,
        )
    raise typer.Exit(result.exit_code)
