"""The public façade: `squall.__all__` is complete and sorted; importing squall is cheap."""

from __future__ import annotations

import subprocess
import sys
import types

import squall


def test_all_is_sorted_and_names_every_public_name() -> None:
    assert squall.__all__ == sorted(squall.__all__)
    assert len(set(squall.__all__)) == len(squall.__all__)
    public = {
        name
        for name, value in vars(squall).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(squall.__all__), public - set(squall.__all__)
    for name in squall.__all__:
        assert hasattr(squall, name), name


def test_the_contract_names_are_there() -> None:
    for name in ("run", "arun", "RunConfig", "EndpointConfig", "SquallError", "RunResult"):
        assert name in squall.__all__
    assert issubclass(squall.InputChangedError, squall.JournalError)
    assert issubclass(squall.ConfigError, squall.SquallError)


def test_import_starts_no_threads_and_loads_no_test_equipment() -> None:
    # A fresh interpreter: this one has imported everything already.
    code = (
        "import sys, threading\n"
        "before = {t.ident for t in threading.enumerate()}\n"
        "import squall\n"
        "after = {t.ident for t in threading.enumerate()}\n"
        "assert after == before, after - before\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('squall.'))\n"
        "for name in ('squall.simulator', 'squall.testing', 'squall.cli', 'squall.serve',\n"
        "             'squall.evals', 'pandas', 'pyarrow'):\n"
        "    assert name not in sys.modules, (name, loaded)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert res.returncode == 0, res.stderr
