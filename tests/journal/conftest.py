"""Fixtures for the journal's tests: a journal path in `tmp_path` and a journal open on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from squall.journal import Journal


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "run.sqlite"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    j = Journal.open(path)
    yield j
    j.close()
