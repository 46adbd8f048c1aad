"""The simulator's command line: `python -m squall.simulator` (and `squall simulator`).

`main()` lives here rather than in `__main__.py` so that `squall.simulator` can re-export it
without importing `__main__` (runpy warns when `python -m` runs a module already imported).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from ..errors import ConfigError
from .server import Simulator
from .settings import SimConfig, demo_config, load_config


async def _serve(config: SimConfig, port: int, ledger_file: str | None) -> None:
    sim = Simulator(config, port=port, ledger_file=ledger_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover - Windows: Ctrl-C raises instead
            pass
    url = await sim.astart()
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.astop()


def main(argv: list[str] | None = None) -> int:
    """Serve a simulator until SIGTERM/SIGINT; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m squall.simulator",
        description="Serve a SIMULATED OpenAI-compatible provider on 127.0.0.1 (test equipment).",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument(
        "--config",
        default=None,
        help="JSON text, a JSON file, or - for stdin (default: the demo config)",
    )
    parser.add_argument(
        "--ledger-file",
        default=None,
        help="append each handled request to this file as a JSON line",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config) if args.config is not None else demo_config()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.port, args.ledger_file))
    except KeyboardInterrupt:  # pragma: no cover - only where signal handlers are unsupported
        pass
    return 0
