"""Shared pytest fixtures: generic test equipment first, then sections that others add."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from squall.clock import Clock
from squall.simulator import SimConfig, Simulator

SimulatorFactory = Callable[..., Simulator]


@pytest.fixture
def simulator() -> Iterator[SimulatorFactory]:
    """Yield a factory that returns a started Simulator; each is stopped at teardown.

    Call it as `simulator(config=None, *, port=0, clock=None, ledger_file=None)`.
    """
    started: list[Simulator] = []

    def make(
        config: SimConfig | None = None,
        *,
        port: int = 0,
        clock: Clock | None = None,
        ledger_file: str | Path | None = None,
    ) -> Simulator:
        sim = Simulator(config or SimConfig(), port=port, clock=clock, ledger_file=ledger_file)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in reversed(started):
        sim.stop()


@pytest.fixture
def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# Fixtures added by other modules' tests go below this line, each under its own heading.
# ---------------------------------------------------------------------------------------------
