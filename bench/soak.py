"""bench/soak: a nasty provider, SIGKILLs at random moments, resumes; every invariant checked.

Not a speed benchmark: a correctness soak over many more faults than the test suite uses. For
each seed, the provider simulator (its own process) serves five keys: one capped at 1800 rpm,
one at 900 rpm and 60k tpm, one dead (401), one with a limit squall is not told (600 rpm), and
one capped at 2 requests in flight that squall is told is unlimited. Every request also risks a
500, 503, reset, malformed body or spontaneous 429 (2-3% each) or a hang past squall's 1.5 s
timeout; the Retry-After style and the rate-limit headers are drawn per seed. `squall run` (the
real CLI, its own process) is killed with SIGKILL 3-6 times at random points, then run to the
end. Checked after each kill: `squall status` says interrupted, with the journal's in-flight
count. Checked at the end: the output holds every row, in order, each with its own answer; no
row the journal had finished before a kill was requested again (the simulator's ledger); no
answer was paid for twice beyond the requests in flight at the kills; no key appears in any
file the runs wrote.

Run: python bench/soak.py [--seeds 3] [--first-seed 1] [--rows 3000]
Exit 0 when every seed holds every invariant. Takes about a minute a seed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "cli"))

from cli_support import (  # noqa: E402  (the CLI tests' helpers: real processes, no mocks)
    arith_rows,
    assert_complete_output,
    digests_to_rows,
    read_jsonl,
    run_squall,
    sim_factory,
    start_squall,
    user_env,
    wait_until,
    write_jsonl,
)

from squall.journal import Journal  # noqa: E402
from squall.records import RowState  # noqa: E402
from squall.simulator import SimConfig, SimKey  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "soak"
KEYS = [f"sk-soak-key{i}-{'x' * 20}{i}" for i in range(1, 6)]
CONFIG = """model = "sim-model"
[retry]
max_attempts = 10
[[endpoints]]
name = "sim"
base_url = "{url}"
timeout_s = 1.5
keys = [{{ key = "${{K1}}", rpm = 1800 }}, {{ key = "${{K2}}", rpm = 900, tpm = 60000 }},
        {{ key = "${{K3}}", rpm = 600 }}, "${{K4}}", {{ key = "${{K5}}", rpm = inf }}]
"""


def soak(seed: int, n: int) -> str:
    """Run one seed; return a line of figures, or raise AssertionError naming what broke."""
    rng = random.Random(seed)
    tmp = OUT / f"seed-{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = SimConfig(
        keys=(
            SimKey(key=KEYS[0], rpm=1800),
            SimKey(key=KEYS[1], rpm=900, tpm=60000),
            SimKey(key=KEYS[2], dead=True),
            SimKey(key=KEYS[3], rpm=600),
            SimKey(key=KEYS[4], max_concurrency=2),
        ),
        latency_s=0.03,
        latency_jitter_s=0.02,
        p_429=0.02,
        p_500=0.03,
        p_503=0.02,
        p_reset=0.02,
        p_malformed=0.02,
        p_hang=0.003,
        hang_s=3.0,
        send_ratelimit_headers=rng.random() < 0.5,
        retry_after=rng.choice(["seconds", "ms", "date", "none"]),
        busy_wording=rng.choice(["concurrency", "rate"]),
        seed=seed,
    )
    make, started = sim_factory(tmp)
    sim = make(cfg)
    try:
        rows = arith_rows(n)
        write_jsonl(tmp / "in.jsonl", rows)
        (tmp / "squall.toml").write_text(CONFIG.format(url=sim.url), encoding="utf-8")
        env = user_env(**{f"K{i + 1}": k for i, k in enumerate(KEYS)})
        args = ("run", "in.jsonl", "-o", "out.jsonl", "-c", "squall.toml")
        journal = tmp / "out.jsonl.squall.sqlite"
        row_of = digests_to_rows(rows)
        restarts: list[tuple[float, set[int]]] = []
        in_flight_total = 0
        kills = sorted(rng.sample(range(n // 20, n - n // 20), rng.randint(3, 6)))
        for point in kills:
            proc = start_squall(*args, cwd=tmp, env=env, log=tmp / "runs.log")
            wait_until(lambda p=point, q=proc: len(sim.served()) >= p or q.poll() is not None, 300)
            if proc.poll() is not None:
                break  # it finished before this kill point: the final run checks the rest
            time.sleep(rng.random() * 0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            with Journal.open(journal, read_only=True) as jr:
                states = {r.index: r.state for r in jr.iter_results()}
            done = {i for i, s in states.items() if s == RowState.DONE}
            in_flight = sum(1 for s in states.values() if s == RowState.SENT)
            in_flight_total += in_flight
            account = json.loads(run_squall("status", journal, "--json", cwd=tmp, env=env).stdout)
            assert account["status"] == "interrupted", account
            assert account["in_flight_at_crash"] == in_flight, (account, in_flight)
            assert account["done"] == len(done), account
            restarts.append((time.monotonic(), done))
        final = run_squall(*args, cwd=tmp, env=env, timeout=600)
        assert final.returncode == 0, final.stderr[-2000:]
        assert_complete_output(read_jsonl(tmp / "out.jsonl"), rows)
        ledger = sim.ledger()
        for e in ledger:
            finished = set().union(*(d for t, d in restarts if t <= e.t))
            assert row_of[e.prompt_sha256] not in finished, f"row resent after a kill: {e}"
        served = Counter(e.prompt_sha256 for e in ledger if e.served)
        assert set(served) == set(row_of)
        twice = sum(v - 1 for v in served.values())
        assert twice <= in_flight_total, (twice, in_flight_total)
        written = b"".join(
            p.read_bytes() for p in tmp.rglob("*") if p.is_file() and "ledger" not in p.name
        )
        assert not any(k.encode() in written for k in KEYS), "a key reached a file"
        refused = sum(1 for e in ledger if e.status == 429)
        return (
            f"seed {seed}: ok; {len(restarts)} kills, {in_flight_total} in flight at kills, "
            f"{twice} paid twice, {len(ledger)} requests for {n} rows ({refused} answered 429)"
        )
    finally:
        for s in started:
            s.stop()


def main(argv: list[str] | None = None) -> int:
    """Soak each seed; print a line per seed; return 0 when all held."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--rows", type=int, default=3000)
    args = ap.parse_args(argv)
    failed = 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        try:
            print(soak(seed, args.rows), flush=True)
        except AssertionError as e:
            failed += 1
            print(f"seed {seed}: FAILED: {e}", flush=True)
    print(f"{args.seeds - failed}/{args.seeds} seeds held every invariant")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
