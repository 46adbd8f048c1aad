r"""What the commands' help shows: command classes and the option types of `squall run`.

The command classes list flags without a metavar; each option type is an `Annotated` alias
(type, flags and help text). Help text is rich markup: write `\[prices]` for a literal
`[prices]`, or rich eats it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption


def _flags_without_metavar(params: list[Any]) -> list[Any]:
    # typer shows a flag as `--restart <bool>`, which reads as if it took a value
    # (`--restart true` fails): an empty metavar shows nothing after the flag.
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A typer command whose help lists boolean flags (and --help) without a metavar."""

    def get_params(self, ctx: Any) -> list[Any]:
        """Return the command's parameters, flags given an empty metavar."""
        return _flags_without_metavar(super().get_params(ctx))


class Group(TyperGroup):
    """A typer group whose help lists boolean flags (and --help) without a metavar."""

    def get_params(self, ctx: Any) -> list[Any]:
        """Return the group's parameters, flags given an empty metavar."""
        return _flags_without_metavar(super().get_params(ctx))


# -- `squall run` ------------------------------------------------------------------------------

Input = Annotated[
    Path, typer.Argument(help="Prompts: .jsonl, .csv, .parquet or OpenAI batch lines.")
]
Output = Annotated[
    Path, typer.Option("-o", "--output", help="Merged output (.jsonl, .csv, .parquet).")
]
ConfigFile = Annotated[Path | None, typer.Option("-c", "--config", help="TOML config file.")]
JournalFile = Annotated[
    Path | None, typer.Option("--journal", help="Journal file (default OUTPUT.squall.sqlite).")
]
BaseUrl = Annotated[
    str | None,
    typer.Option("--base-url", help="One endpoint's base URL (replaces the config's endpoints)."),
]
Model = Annotated[str | None, typer.Option("--model", help="Model name to send.")]
ApiKind = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="Request kind: chat (default), completions or embeddings; batch lines: their url.",
    ),
]
KeyEnv = Annotated[
    list[str] | None,
    typer.Option("--key-env", help="Environment variable holding a key (repeat for several keys)."),
]
Rpm = Annotated[
    float | None, typer.Option("--rpm", help="Requests per minute per key (inf: unlimited).")
]
Tpm = Annotated[float | None, typer.Option("--tpm", help="Tokens per minute per key.")]
Concurrency = Annotated[
    int | None, typer.Option("--concurrency", help="Requests in flight per key.")
]
Template = Annotated[
    str | None,
    typer.Option(
        "--template",
        help="Prompt template over the row's columns, e.g. '计算 {expression} 的结果'.",
    ),
]
System = Annotated[str | None, typer.Option("--system", help="System prompt.")]
MaxTokens = Annotated[int | None, typer.Option("--max-tokens")]
Temperature = Annotated[float | None, typer.Option("--temperature")]
MaxCost = Annotated[
    float | None,
    typer.Option(
        "--max-cost", help="Stop sending before the spend (USD, from \\[prices]) would pass this."
    ),
]
Restart = Annotated[bool, typer.Option("--restart", help="Discard the journal and start fresh.")]
RetryFailed = Annotated[
    bool, typer.Option("--retry-failed", help="Send rows that failed for good again.")
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Validate the input, estimate tokens and cost; send nothing."),
]
ProgressMode = Annotated[str | None, typer.Option("--progress", help="auto, rich, plain or off.")]
InputFormat = Annotated[
    str | None,
    typer.Option(
        "--format", help="Input format when the extension does not say: jsonl, csv, parquet."
    ),
]

BatchApi = Annotated[
    bool,
    typer.Option(
        "--batch-api",
        help="Send through the provider's own Batch API (/v1/files, /v1/batches): its batch "
        "price (OpenAI: half), answers within 24 h. Rerun the same command to resume.",
    ),
]
BatchFallback = Annotated[
    str | None,
    typer.Option(
        "--batch-fallback",
        help="Rows a batch left when it ended expired, failed or cancelled: none (submitted "
        "again in a new batch, up to 3 passes a run; the default) or online (sent through the "
        "pooled keys at once).",
    ),
]
EmbeddingsMaxInputs = Annotated[
    int | None,
    typer.Option(
        "--embeddings-max-inputs", help="Embeddings: the most rows packed into one request."
    ),
]
EmbeddingsMaxTokens = Annotated[
    int | None,
    typer.Option(
        "--embeddings-max-tokens",
        help="Embeddings: the most estimated tokens packed into one request.",
    ),
]

Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help='Run on Ray (pip install "squall\\[ray]"): local (a Ray instance here), auto (the '
        "running cluster) or a cluster address. Limits hold cluster-wide.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="Ray workers (default: the cluster's CPUs, at most 8)."),
]

PROGRESS_MODES = ("auto", "rich", "plain", "off")
BATCH_FALLBACKS = ("none", "online")

APIS = ("chat", "completions", "embeddings")
