"""Fixtures for the end-to-end `squall` command tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import SimFactory, sim_factory


@pytest.fixture
def sim_proc(tmp_path: Path) -> Iterator[SimFactory]:
    """Yield a factory `sim_proc(SimConfig(...))` of simulator processes, stopped at teardown."""
    make, started = sim_factory(tmp_path)
    yield make
    for sim in reversed(started):
        sim.stop()
