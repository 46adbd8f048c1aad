"""API keys never leave squall unmasked: not in any file a run writes, nor in anything it prints.

The simulator plays a careless relay that echoes the full key in its 401/403 messages; one
key is dead (401) and one is out of quota (403). A run is killed mid-way (so the journal's
-wal file is left as a crash leaves it), then resumed and inspected with `squall status`.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from cli_support import (
    DEAD_KEY,
    KEY1,
    KEY2,
    SimFactory,
    arith_rows,
    assert_complete_output,
    iter_files,
    read_jsonl,
    run_squall,
    squall_cmd,
    start_squall,
    user_env,
    wait_until,
    write_jsonl,
)

from squall.redact import mask_key
from squall.simulator import SimConfig, SimKey

SECRETS = (KEY1, KEY2, DEAD_KEY)
# The part of each key between its prefix and its last four characters: a leak of any
# longer piece of a key shows up as one of these.
NEEDLES = tuple(s.encode() for key in SECRETS for s in (key, key[8:-4]))


def leaks(data: bytes) -> list[bytes]:
    """Return the secrets (or their inner parts) found in `data`."""
    return [n for n in NEEDLES if n in data]


@pytest.mark.slow
def test_keys_appear_nowhere_but_masked(tmp_path: Path, sim_proc: SimFactory) -> None:
    sim = sim_proc(
        SimConfig(
            keys=(
                SimKey(key=KEY1),
                SimKey(key=DEAD_KEY, dead=True),
                SimKey(key=KEY2, forbidden=True),
            ),
            echo_key_in_errors=True,
            latency_s=0.03,
            p_500=0.05,
        )
    )
    work = tmp_path / "work"
    work.mkdir()
    rows = arith_rows(150)
    write_jsonl(work / "in.jsonl", rows)
    # K1 comes from the environment, the other two from .env through ${NAME}.
    (work / ".env").write_text(f"K_DEAD={DEAD_KEY}\nK2={KEY2}\n", encoding="utf-8")
    (work / "squall.toml").write_text(
        'model = "sim-model"\n'
        "[[endpoints]]\n"
        'name = "relay"\n'
        f'base_url = "{sim.url}"\n'
        "rpm = 3000\n"
        "max_concurrency = 4\n"
        'keys = ["${K1}", "${K_DEAD}", { key = "${K2}", rpm = 600 }]\n',
        encoding="utf-8",
    )
    env = user_env(K1=KEY1)
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    printed: list[bytes] = []

    # 1. Killed mid-run: the journal and its -wal stay as a crash leaves them.
    log = tmp_path / "killed.log"
    proc = start_squall(*args, "--progress", "plain", cwd=work, env=env, log=log)
    assert wait_until(lambda: len(sim.served()) >= 30 or proc.poll() is not None, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    printed.append(log.read_bytes())
    assert (work / "out.jsonl.squall.sqlite-wal").exists()
    stored = b""
    for path in iter_files(work):
        if path.name not in (".env", "squall.toml"):
            data = path.read_bytes()
            assert leaks(data) == [], path
            stored += data
    # The relay's 401 text (the dead key's last error) reached the journal, masked.
    assert mask_key(DEAD_KEY).encode() in stored

    # 2. Resumed to the end, with the rich display forced on (it would show on a terminal).
    res = subprocess.run(
        squall_cmd(*args, "--progress", "rich"),
        cwd=work,
        env=env,
        capture_output=True,
        check=False,
    )
    printed += [res.stdout, res.stderr]
    (tmp_path / "resumed.log").write_bytes(res.stdout + res.stderr)
    assert res.returncode == 0, res.stderr.decode()
    assert_complete_output(read_jsonl(work / "out.jsonl"), rows)

    # 3. The account, both ways.
    for extra in ([], ["--json"]):
        status = run_squall("status", "out.jsonl.squall.sqlite", *extra, cwd=work, env=env)
        assert status.returncode == 0
        printed += [status.stdout.encode(), status.stderr.encode()]

    for path in iter_files(work):
        if path.name not in (".env", "squall.toml"):
            assert leaks(path.read_bytes()) == [], path
    for text in printed:
        assert leaks(text) == []

    # Keys are shown masked where they are shown: the dead and the out-of-quota key are
    # named in warnings, every key in the account's table.
    shown = b"\n".join(printed).decode()
    for key in SECRETS:
        assert mask_key(key) in shown, mask_key(key)
    assert mask_key(KEY1) == "sk-...abcd"
    # The relay did echo the keys: the test would catch a leak.
    assert any(e.status in (401, 403) for e in sim.ledger())
