"""bench/crash: SIGKILL a run part-way, resume it, and count paid work lost or paid twice.

For each kill point (30/60/90% of 3000 rows answered, by the provider's ledger) and each
contender, a fresh provider simulator (`squall.simulator`, its own process: one unlimited key,
50 +/- 30 ms latency) serves a run that is killed with SIGKILL, then the same command is run
again to the end:

    squall   the real CLI, `squall run INPUT -o OUTPUT -c CONFIG`, resumed by the same command
    seed     the seed's method (`python bench/seed_baseline.py < job.json`), rerun as its post
             says: chunks whose CSV exists are skipped

Counted from the simulator's ledger (what the provider served, i.e. billed) against what the
run had kept at the kill (squall: DONE rows in its journal; seed: rows of the chunk CSVs on disk):

    in flight     squall: rows the journal had marked sent but not answered; seed: the rows of
                  the chunk under way (its gather keeps nothing until the whole chunk is done)
    lost          served before the kill, absent from what was kept: paid for, thrown away
    beyond        of those, rows that were NOT in flight at the kill (target: 0)
    kept, resent  rows kept at the kill that the resumed run requested again (target: 0)
    paid twice    rows served more than once over both runs
    output        after the resume: every row present, in input order, each answer its own

Run: python bench/crash.py [--rows 3000] [--points 0.3,0.6,0.9] [--contenders squall,seed]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    BENCH,
    OUT,
    Table,
    header,
    iter_prompts,
    save_report,
    start_simulator,
    verdict,
    write_prompts,
)

KEY = "sk-bench-crash-00000001"


class LedgerTail:
    """Follows a simulator's ledger file as it grows, counting served answers."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._f: Any = None
        self._partial = ""
        self.served = 0

    def poll(self) -> int:
        """Read what was appended since the last poll; return the served count so far."""
        if self._f is None:
            if not self._path.exists():
                return 0
            self._f = self._path.open(encoding="utf-8")
        chunk = self._f.read()
        if chunk:
            text = self._partial + chunk
            lines = text.split("\n")
            self._partial = lines.pop()
            self.served += sum(1 for line in lines if '"served": true' in line)
        return self.served

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """Return every entry of a ledger file (a torn last line is skipped)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def squall_command(work: Path, rows: Path) -> list[str]:
    """Return the `squall run` command line of the squall contender."""
    exe = Path(sys.executable).with_name("squall")
    return [
        str(exe),
        "run",
        str(rows),
        "-o",
        str(work / "out.jsonl"),
        "-c",
        str(work / "squall.toml"),
    ]


def seed_command() -> list[str]:
    """Return the command line of the seed contender (its job comes on stdin)."""
    return [sys.executable, str(BENCH / "seed_baseline.py")]


def start(cmd: list[str], work: Path, stdin: str | None, tag: str) -> subprocess.Popen[str]:
    """Start a contender process with its output in `work`."""
    out = (work / f"{tag}.stdout").open("w")
    err = (work / f"{tag}.stderr").open("w")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        text=True,
        cwd=work,
    )
    out.close()
    err.close()
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    return proc


def kept_squall(work: Path) -> tuple[set[int], set[int]]:
    """Return (rows DONE, rows SENT) in the squall journal left by the killed run."""
    from squall.journal import Journal
    from squall.records import RowState

    done: set[int] = set()
    sent: set[int] = set()
    with Journal.open(work / "out.jsonl.squall.sqlite", read_only=True) as jr:
        for r in jr.iter_results():
            if r.state == RowState.DONE:
                done.add(r.index)
            elif r.state == RowState.SENT:
                sent.add(r.index)
    return done, sent


def kept_seed(work: Path, n: int, chunk: int) -> tuple[set[int], set[int]]:
    """Return (rows in chunk CSVs on disk, rows of the chunk that was under way)."""
    done: set[int] = set()
    for start_idx in range(0, n, chunk):
        path = work / "seed" / f"{start_idx}_bench.csv"
        if path.exists():
            with path.open(encoding="utf-8") as f:
                saved = sum(1 for _ in csv.DictReader(f))
            done.update(range(start_idx, start_idx + saved))
    first_missing = next((i for i in range(0, n, chunk) if i not in done), None)
    in_flight = (
        set() if first_missing is None else set(range(first_missing, min(n, first_missing + chunk)))
    )
    return done, in_flight


def check_output(name: str, work: Path, prompts: list[str]) -> str:
    """Return "complete, in order, answers match" or what is wrong with the final output."""
    from squall.testing import expected_answer

    answers: list[str | None] = []
    if name == "squall":
        with (work / "out.jsonl").open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                answers.append(row.get("response"))
                if row.get("id") != len(answers) - 1:
                    return f"row {len(answers)} out of order (id {row.get('id')})"
    else:
        path = work / "seed" / "all_bench.csv"
        if not path.exists():
            return "no all_bench.csv"
        with path.open(encoding="utf-8") as f:
            answers = [r["infer"] for r in csv.DictReader(f)]
    if len(answers) != len(prompts):
        return f"{len(answers)} rows, expected {len(prompts)}"
    wrong = sum(1 for a, p in zip(answers, prompts, strict=True) if str(a) != expected_answer(p))
    return "complete, in order, answers match" if wrong == 0 else f"{wrong} answers wrong"


def one_case(
    name: str, point: float, rows: Path, prompts: list[str], timeout_s: float
) -> dict[str, Any]:
    """Kill contender `name` once `point` of the rows are served, resume it; return the counts."""
    from squall.testing import SimConfig, SimKey, prompt_digest

    n = len(prompts)
    work = OUT / f"crash-{name}-{int(point * 100)}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ledger = work / "ledger.jsonl"
    sim = SimConfig(keys=(SimKey(key=KEY),), latency_s=0.05, latency_jitter_s=0.03, seed=7)
    digest_row = {prompt_digest(p): i for i, p in enumerate(prompts)}
    chunk = 500
    with start_simulator(sim, ledger) as server:
        if name == "squall":
            (work / "squall.toml").write_text(
                'model = "sim-model"\nprogress = "off"\n'
                f'[[endpoints]]\nname = "sim"\nbase_url = "{server.base_url}"\n'
                f'rpm = inf\nmax_concurrency = 64\nkeys = ["{KEY}"]\n',
                encoding="utf-8",
            )
            cmd, stdin = squall_command(work, rows), None
        else:
            job = {
                "base_url": server.base_url,
                "keys": [{"key": KEY, "rps": None}],
                "input": str(rows),
                "output": str(work / "seed"),
                "keyword": "bench",
                "chunk_size": chunk,
                "model": "sim-model",
            }
            cmd, stdin = seed_command(), json.dumps(job)

        # First run: kill it with SIGKILL once the provider has served `point` of the rows.
        tail = LedgerTail(ledger)
        proc = start(cmd, work, stdin, "first")
        target = int(point * n)
        deadline = time.monotonic() + timeout_s
        served_at_kill = None
        while time.monotonic() < deadline and proc.poll() is None:
            if tail.poll() >= target:
                os.kill(proc.pid, signal.SIGKILL)
                served_at_kill = tail.served
                break
            time.sleep(0.002)
        proc.wait()
        tail.close()
        time.sleep(0.5)  # let the server finish (or drop) what the dead client had in flight
        first = read_ledger(ledger)
        if name == "squall":
            kept, in_flight = kept_squall(work)
        else:
            kept, in_flight = kept_seed(work, n, chunk)
        served_first = {digest_row[e["prompt_sha256"]] for e in first if e["served"]}
        lost = served_first - kept
        beyond = lost - in_flight

        # Second run: the same command, to the end.
        proc = start(cmd, work, stdin, "resume")
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    entries = read_ledger(ledger)
    again = [digest_row[e["prompt_sha256"]] for e in entries[len(first) :]]
    resent_kept = len(kept & set(again))
    served = Counter(digest_row[e["prompt_sha256"]] for e in entries if e["served"])
    return {
        "contender": name,
        "point": point,
        "killed": served_at_kill is not None,
        "served_at_kill": len(served_first),
        "kept_at_kill": len(kept),
        "in_flight_at_kill": len(in_flight),
        "lost": len(lost),
        "lost_beyond_in_flight": len(beyond),
        "kept_resent": resent_kept,
        "paid_twice": sum(1 for c in served.values() if c > 1),
        "requests_total": len(entries),
        "resume_rc": rc,
        "output": check_output(name, work, prompts),
        "command": " ".join(cmd) + (" < job.json" if stdin is not None else ""),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every case and print the table; return 0 when squall meets both targets."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--points", default="0.3,0.6,0.9")
    ap.add_argument("--contenders", default="squall,seed")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    args = ap.parse_args(argv)
    points = [float(p) for p in args.points.split(",") if p.strip()]
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]

    print(header("bench/crash", sys.argv))
    rows = write_prompts(OUT / f"crash-{args.rows}.jsonl", args.rows)
    prompts = [p for _, p in iter_prompts(rows)]
    results = []
    for name in names:
        for point in points:
            r = one_case(name, point, rows, prompts, args.timeout)
            results.append(r)
            print(
                f"  {name:<6} killed at {int(point * 100)}%: lost {r['lost']}, "
                f"paid twice {r['paid_twice']}, resume exit {r['resume_rc']}",
                flush=True,
            )

    table = Table(
        [
            "contender",
            "kill at",
            "served at kill",
            "kept at kill",
            "in flight at kill",
            "lost",
            "lost beyond in-flight",
            "kept rows resent",
            "paid twice",
            "resume exit",
            "final output",
        ]
    )
    for r in results:
        table.add(
            r["contender"],
            f"{int(r['point'] * 100)}%" + ("" if r["killed"] else " (ended first)"),
            r["served_at_kill"],
            r["kept_at_kill"],
            r["in_flight_at_kill"],
            r["lost"],
            r["lost_beyond_in_flight"],
            r["kept_resent"],
            r["paid_twice"],
            r["resume_rc"],
            r["output"],
        )
    print(
        f"\n{args.rows} rows, one unlimited key, 50 +/- 30 ms latency; SIGKILL, then the same "
        "command again\n"
    )
    print(table.render())
    by = {name: [r for r in results if r["contender"] == name] for name in names}
    for name, rs in by.items():
        print(
            f"{name}: lost {sum(r['lost'] for r in rs)}, paid twice "
            f"{sum(r['paid_twice'] for r in rs)} over {len(rs)} kills"
        )
    ok = True
    if by.get("squall"):
        rs = by["squall"]
        beyond = sum(r["lost_beyond_in_flight"] for r in rs)
        resent = sum(r["kept_resent"] for r in rs)
        good_out = all(r["output"].startswith("complete") and r["resume_rc"] == 0 for r in rs)
        ok = beyond == 0 and resent == 0 and good_out
        print(
            f"\ntarget 0 lost beyond the in-flight count: {beyond} -> {verdict(beyond == 0)}\n"
            f"target 0 journaled rows requested twice: {resent} -> {verdict(resent == 0)}\n"
            f"final outputs complete and correct: {verdict(good_out)}"
        )
    path = save_report("crash", {"args": vars(args), "results": results})
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
