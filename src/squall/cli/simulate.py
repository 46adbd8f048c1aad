"""`squall simulate`: serve the provider SIMULATOR (test equipment, not a model) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..errors import SquallError
from . import help as h
from .console import err, fail, out

if TYPE_CHECKING:
    from ..simulator import SimConfig, SimKey, Simulator

CONFIG_HELP = (
    "Simulator settings: JSON text, a JSON file, or - for stdin. Default {}: any key, no "
    'limits, any model. Keys: "keys" (a list of key strings, or objects {"key", "rpm", "tpm", '
    '"max_concurrency", "dead", "forbidden", "limit_mode": bucket|sliding, "window_s"}: only '
    'those keys are accepted), "models", "strict_models", "latency_s", "latency_jitter_s", '
    '"p_429", "p_500", "p_503", "p_reset", "p_malformed", "p_hang", "hang_s", "retry_after": '
    'seconds|ms|date|none, "send_ratelimit_headers", "error_shape", "busy_wording", "seed", '
    '"batches" (the Batch API: {"validating_s", "line_s", "finalizing_s", "cancelling_s", '
    '"expire_after_s", "time_scale", "p_fail", and real-second "upload_delay_s", '
    '"create_reply_delay_s", "content_delay_s"}).'
)


def simulate_cmd(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: a free one).")] = 8000,
    config: Annotated[str | None, typer.Option("--config", help=escape(CONFIG_HELP))] = None,
) -> None:
    """Serve a SIMULATED OpenAI-compatible provider on 127.0.0.1 until Ctrl-C.

    Not a model: it answers arithmetic prompts exactly and echoes a hash of others.

    By default it accepts any key, without limits; --config declares keys, limits and faults.

    Prints its base URL as the first line of stdout, then its models and keys on stderr.
    """
    from ..simulator import Simulator, load_config

    try:
        sim_config = load_config(config or "{}")
        asyncio.run(_serve(Simulator(sim_config, port=port), sim_config))
    except SquallError as e:
        raise fail(e) from None


async def _serve(sim: Simulator, config: SimConfig) -> None:
    """Serve `sim` until SIGTERM or SIGINT, saying first where and with which keys."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises instead
            loop.add_signal_handler(sig, stop.set)
    url = await sim.astart()
    try:
        out.print(url, soft_wrap=True)  # the first line of stdout, for scripts
        for line in describe(url, config):
            err.print(escape(line), soft_wrap=True)
        await stop.wait()
    finally:
        await sim.astop()


def describe(url: str, config: SimConfig) -> list[str]:
    """Return the lines that say what the simulator serves: URL, keys and models."""
    models = ", ".join(config.models) + ("" if config.strict_models else " (any name answered)")
    lines = [f"simulated provider (not a model) at {url}", f"models: {models}"]
    if not config.keys:
        lines.append("keys: any key is accepted, without limits")
    lines += [_key_line(i, k) for i, k in enumerate(config.keys, 1)]
    lines.append("Ctrl-C stops it.")
    return lines


def _key_line(position: int, key: SimKey) -> str:
    limits = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("rpm", key.rpm),
            ("tpm", key.tpm),
            ("concurrency", key.max_concurrency),
        )
        if value is not None
    )
    state = "dead (401)" if key.dead else "forbidden (403)" if key.forbidden else ""
    said = ", ".join(x for x in (limits, state) if x) or "no limits"
    return f"key {position} ({key.masked}): {said}"


def register(app: typer.Typer) -> None:
    """Add `simulate` to `app`."""
    app.command("simulate", cls=h.Command)(simulate_cmd)
