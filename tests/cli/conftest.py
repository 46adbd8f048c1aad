"""Fixtures for the end-to-end `squall` command tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import KEY1, SimFactory, SimProcess, sim_factory

from squall.simulator import SimConfig, SimKey


@pytest.fixture
def sim_proc(tmp_path: Path) -> Iterator[SimFactory]:
    """Yield a factory `sim_proc(SimConfig(...))` of simulator processes, stopped at teardown."""
    make, started = sim_factory(tmp_path)
    yield make
    for sim in reversed(started):
        sim.stop()


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """Yield one plain simulator process (key KEY1, no limits) for a whole test module.

    Tests that check "nothing was sent" compare its ledger's length before and after.
    """
    make, started = sim_factory(tmp_path_factory.mktemp("shared-sim"))
    yield make(SimConfig(keys=(SimKey(key=KEY1),)))
    for sim in reversed(started):
        sim.stop()
