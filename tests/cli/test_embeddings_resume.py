"""Killing an embeddings run (SIGKILL) mid-run, then resuming it: packs, journal and ledger.

The simulator's ledger names a pack by the digest of its texts joined by newlines, so the
packs the resumed run must send (the rows not done at the kill, in order, max_inputs a pack)
can be named in advance: the ledger after the kill must hold exactly those.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from cli_support import (
    KEY1,
    SimFactory,
    read_jsonl,
    run_squall,
    start_squall,
    wait_until,
    write_config,
    write_jsonl,
)

from squall.journal import Journal
from squall.records import RowState
from squall.simulator import SimConfig, SimKey, expected_embedding, prompt_digest
from squall.simulator.embeddings import DEFAULT_DIMENSIONS

PACK = 10


def test_sigkill_mid_embeddings_run_then_resume_sends_only_rows_not_done(
    tmp_path: Path, sim_proc: SimFactory
) -> None:
    sim = sim_proc(SimConfig(keys=(SimKey(key=KEY1),), latency_s=0.25))
    texts = [f"passage {i}: " + "lorem " * (i % 5) for i in range(300)]
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": t} for i, t in enumerate(texts)])
    write_config(
        tmp_path / "squall.toml",
        sim.url,
        endpoint={"rpm": 9000, "max_concurrency": 2},
        api="embeddings",
        embeddings_max_inputs=PACK,
    )
    args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
    journal = tmp_path / "out.jsonl.squall.sqlite"

    proc = start_squall(*args, cwd=tmp_path, log=tmp_path / "run.log")
    assert wait_until(lambda: len(sim.served()) >= 4 or proc.poll() is not None, 60)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed_at = time.monotonic()
    with Journal.open(journal, read_only=True) as jr:
        states = {r.index: r.state for r in jr.iter_results()}
    done = {i for i, s in states.items() if s is RowState.DONE}
    assert 0 < len(done) < len(texts)
    assert len(done) % PACK == 0  # a pack's rows are journaled done together

    final = run_squall(*args, cwd=tmp_path, timeout=120)
    assert final.returncode == 0, final.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    want_vectors = [expected_embedding(t, DEFAULT_DIMENSIONS) for t in texts]
    assert [r["embedding"] for r in rows] == want_vectors

    todo = [i for i in range(len(texts)) if i not in done]
    want = {
        prompt_digest("\n".join(texts[i] for i in todo[k : k + PACK]))
        for k in range(0, len(todo), PACK)
    }
    after = [e for e in sim.ledger() if e.t > killed_at]
    assert {e.prompt_sha256 for e in after if e.served} == want
    assert sum(e.inputs for e in after if e.served) == len(todo)
