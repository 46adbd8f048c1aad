"""The journal's meta: free-form values, and the typed `RunMeta` over the keys runs use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squall.errors import JournalError
from squall.journal import Journal, ModelPrice, RunMeta


def test_meta_values(journal: Journal) -> None:
    assert journal.get_meta("prices") is None
    journal.set_meta("prices", '{"m": [1.0, 2.0]}')
    journal.set_meta("prices", '{"m": [3.0, 4.0]}')
    assert journal.get_meta("prices") == '{"m": [3.0, 4.0]}'
    with pytest.raises(JournalError, match="journal's own"):
        journal.set_meta("settings", "{}")


def test_run_meta_defaults_when_nothing_was_recorded(journal: Journal) -> None:
    assert journal.run_meta() == RunMeta()
    assert journal.run_meta().last_stop_reason is None


def test_run_meta_round_trips(path: Path) -> None:
    meta = RunMeta(
        models={"ep1": "gpt-x", "ep2": "qwen"},
        prices={"gpt-x": ModelPrice(input=1.5, output=6.0), "qwen": ModelPrice()},
        last_stop_reason="max_cost reached",
    )
    with Journal.open(path) as j:
        j.write_run_meta(meta)
    with Journal.open(path, read_only=True) as j:
        assert j.run_meta() == meta
        assert j.run_meta().prices["gpt-x"].as_dict() == {"input": 1.5, "output": 6.0, "batch": 0.5}
    with Journal.open(path) as j:
        j.write_run_meta(RunMeta(models=meta.models, prices=meta.prices))
        assert j.run_meta().last_stop_reason is None
        assert j.get_meta("last_stop_reason") == ""


def test_run_meta_reads_the_free_form_keys_of_older_runs(journal: Journal) -> None:
    # Exactly what api.py and cli/run.py write and read with set_meta/get_meta.
    journal.set_meta("models", '{"a": "m1"}')
    journal.set_meta("prices", '{"m1": {"input": 0.5, "output": 2.0}}')
    journal.set_meta("last_stop_reason", "")
    meta = journal.run_meta()
    assert meta == RunMeta(models={"a": "m1"}, prices={"m1": ModelPrice(0.5, 2.0)})
    journal.set_meta("last_stop_reason", "interrupted by the cost cap")
    assert journal.run_meta().last_stop_reason == "interrupted by the cost cap"
    # And what write_run_meta stores reads back through get_meta as callers parse it today.
    journal.write_run_meta(meta)
    assert json.loads(journal.get_meta("prices") or "") == {
        "m1": {"input": 0.5, "output": 2.0, "batch": 0.5}
    }
    assert journal.get_meta("models") == '{"a": "m1"}'


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("models", "not json", "not JSON"),
        ("prices", "[1, 2]", "not a JSON object"),
        ("prices", '{"m": 3}', "malformed"),
        ("prices", '{"m": {"input": "lots"}}', "malformed"),
    ],
)
def test_malformed_run_meta_is_a_journal_error(
    journal: Journal, key: str, value: str, why: str
) -> None:
    journal.set_meta(key, value)
    with pytest.raises(JournalError, match=why):
        journal.run_meta()
