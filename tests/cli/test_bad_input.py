"""Bad input, bad config: `squall run` exits 2, says where (file, line, field), sends nothing,
and loses nothing a journal already holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_support import (
    KEY1,
    SimFactory,
    SimProcess,
    arith_rows,
    assert_complete_output,
    one_line,
    read_jsonl,
    run_squall,
    write_config,
    write_jsonl,
)

from squall.simulator import SimConfig, SimKey

SIM = SimConfig(keys=(SimKey(key=KEY1),))


def lines_with(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


GOOD = b'{"id": 1, "prompt": "what is 1 + 1?"}'


@pytest.mark.parametrize(
    ("name", "content", "extra", "needles"),
    [
        (
            "malformed.jsonl",
            [GOOD, GOOD, GOOD, b'{"id": 4, "prompt": "what is 4 + 4?"', GOOD],
            [],
            ["malformed.jsonl", "line 4", "not valid JSON"],
        ),
        (
            "no_column.jsonl",
            [b'{"id": 1, "expression": "1 + 1"}', b'{"id": 2, "expr": "2 + 2"}'],
            ["--template", "calc {expression}"],
            ["no_column.jsonl", "line 2", "'expression'", "columns: id, expr"],
        ),
        (
            "no_column_anywhere.jsonl",
            [b'{"id": 1, "question": "1 + 1"}', b'{"id": 2, "question": "2 + 2"}'],
            ["--template", "calc {expression}"],
            ["no_column_anywhere.jsonl", "line 1", "'expression'", "id, question"],
        ),
        (
            "empty_prompt.jsonl",
            [GOOD, GOOD, GOOD, GOOD, b'{"id": 5, "prompt": "   "}'],
            [],
            ["empty_prompt.jsonl", "line 5", "'prompt'", "empty"],
        ),
        (
            "no_prompt.jsonl",
            [GOOD, b'{"id": 2, "text": "hello"}'],
            [],
            ["no_prompt.jsonl", "line 2", "prompt", "--template", "id, text"],
        ),
        (
            "not_utf8.jsonl",
            [GOOD, GOOD, b'{"id": 3, "prompt": "caf\xe9 au lait"}'],
            [],
            ["not_utf8.jsonl", "line 3", "UTF-8"],
        ),
        (
            "bad.csv",
            [b"id,expression", b"1,1 + 1", b"2,\xff\xfe"],
            ["--template", "calc {expression}"],
            ["bad.csv", "line 3", "UTF-8"],
        ),
    ],
)
def test_bad_rows_exit_2_naming_file_line_field_and_send_nothing(
    tmp_path: Path,
    shared_sim: SimProcess,
    name: str,
    content: list[bytes],
    extra: list[str],
    needles: list[str],
) -> None:
    sim = shared_sim
    sent_before = len(sim.ledger())
    lines_with(tmp_path / name, content)
    write_config(tmp_path / "squall.toml", sim.url)

    res = run_squall("run", name, "-o", "out.jsonl", "-c", "squall.toml", *extra, cwd=tmp_path)

    assert res.returncode == 2, (res.stdout, res.stderr)
    err = one_line(res.stderr)
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in res.stderr
    assert len(sim.ledger()) == sent_before
    assert not (tmp_path / "out.jsonl").exists()
    # A first run that failed before sending leaves no journal to trip over on the fixed rerun.
    assert not (tmp_path / "out.jsonl.squall.sqlite").exists()


def test_missing_and_unreadable_input(tmp_path: Path, shared_sim: SimProcess) -> None:
    sim = shared_sim
    sent_before = len(sim.ledger())
    write_config(tmp_path / "squall.toml", sim.url)
    missing = run_squall("run", "nope.jsonl", "-o", "o.jsonl", "-c", "squall.toml", cwd=tmp_path)
    assert missing.returncode == 2
    assert "nope.jsonl" in missing.stderr and "no such file" in missing.stderr
    (tmp_path / "adir.jsonl").mkdir()
    a_dir = run_squall("run", "adir.jsonl", "-o", "o.jsonl", "-c", "squall.toml", cwd=tmp_path)
    assert a_dir.returncode == 2 and "adir.jsonl" in a_dir.stderr
    if os.geteuid() != 0:  # root reads any file, whatever its permissions
        unreadable = write_jsonl(tmp_path / "locked.jsonl", arith_rows(3))
        unreadable.chmod(0)
        res = run_squall("run", "locked.jsonl", "-o", "o.jsonl", "-c", "squall.toml", cwd=tmp_path)
        unreadable.chmod(0o644)
        assert res.returncode == 2
        assert "locked.jsonl" in res.stderr and "permission" in res.stderr
    assert len(sim.ledger()) == sent_before


@pytest.mark.parametrize(
    ("toml", "needles"),
    [
        (
            'model = "m"\nmax_tokenz = 5\n[[endpoints]]\nname = "sim"\nbase_url = "URL"\n'
            'keys = ["${K1}"]\n',
            ["squall.toml", "max_tokenz", "unknown setting"],
        ),
        (
            'model = "m"\n[[endpoints]]\nname = "sim"\nbase_url = "URL"\nkeys = ["${K1}"]\n'
            "rpn = 60\n",
            ["squall.toml", "rpn", "unknown setting"],
        ),
        (
            'model = "m"\n[[endpoints]]\nname = "sim"\nbase_url = "URL"\n'
            'keys = ["${K1}", "${NOT_SET_KEY}"]\n',
            ["${NOT_SET_KEY}", "not set", "endpoints[0].keys[1]"],
        ),
        ('model = "m"\n[[endpoints]\n', ["squall.toml", "TOML"]),
    ],
)
def test_bad_config_exits_2_and_sends_nothing(
    tmp_path: Path, shared_sim: SimProcess, toml: str, needles: list[str]
) -> None:
    sim = shared_sim
    sent_before = len(sim.ledger())
    write_jsonl(tmp_path / "in.jsonl", arith_rows(3))
    (tmp_path / "squall.toml").write_text(toml.replace("URL", sim.url), encoding="utf-8")
    res = run_squall("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    err = one_line(res.stderr)
    for needle in needles:
        assert needle in err, (needle, err)
    assert len(sim.ledger()) == sent_before


def test_unset_variable_names_the_config_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", arith_rows(1))
    (tmp_path / "squall.toml").write_text(
        'model = "m"\n[[endpoints]]\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'keys = ["${NOT_SET_KEY}"]\n',
        encoding="utf-8",
    )
    res = run_squall("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml", cwd=tmp_path)
    assert res.returncode == 2
    assert "squall.toml" in res.stderr


def test_bad_row_at_line_500_keeps_the_100_rows_already_done(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SIM)
    rows = arith_rows(600)
    write_config(tmp_path / "squall.toml", sim.url)
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    write_jsonl(tmp_path / "in.jsonl", rows[:100])
    first = run_squall(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert len(sim.served()) == 100

    # The input grows to 600 rows, and line 500 is broken.
    broken = [dict(r) for r in rows]
    broken[499]["prompt"] = ""
    write_jsonl(tmp_path / "in.jsonl", broken)
    res = run_squall(*args, cwd=tmp_path)
    assert res.returncode == 2
    err = one_line(res.stderr)
    assert "in.jsonl" in err and "line 500" in err and "'prompt'" in err
    assert len(sim.ledger()) == 100
    status = run_squall("status", "out.jsonl.squall.sqlite", "--json", cwd=tmp_path)
    assert '"done": 100' in status.stdout

    write_jsonl(tmp_path / "in.jsonl", rows)
    fixed = run_squall(*args, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert_complete_output(read_jsonl(tmp_path / "out.jsonl"), rows)
    assert len(sim.served()) == 600  # the first 100 were not asked for again
