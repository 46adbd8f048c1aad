"""bench/batchapi: a 10,000-row round trip through the Batch API, with a SIGKILL in the middle.

Each contender gets a fresh provider simulator (`squall.simulator`, its own process: one key,
the Files and Batches API with fast batch timings, `--time-scale`) and runs twice: a first leg
killed with SIGKILL once the provider has answered `--kill-at` of the rows as batch lines (so
its batches are created and in progress), then the same command again, to the end.

    squall   `python -m squall run ROWS -o OUT -c squall.toml --batch-api`, with
             batch_max_requests = --chunk (5 batches for 10,000 rows); its journal records
             every step before the next call, so the second leg adopts the batches the first
             one made
    hand     what a user writes by hand, the OpenAI cookbook way (`hand_written` below, run by
             `python bench/batchapi.py --hand JOB.json`): one JSONL of every request, upload,
             create a batch, poll, download; it keeps no state, so the rerun uploads and
             submits everything again

Counted from the simulator's ledger (what the provider ran, i.e. billed), after every batch at
the provider has ended (the killed leg's batches go on running there):

    rows answered     distinct rows with a batch line answered 200
    batches created   "batch_create" events
    in two batches    rows answered in more than one batch (paid twice; squall's target: 0)
    sent online       online requests (target: 0)
    output            every row present, in input order, each answer `expected_answer(prompt)`

squall's collect rate: rows collected / the seconds covered by the chunks' collect spans, each
from the ledger's download of its output file to the journal's `collected_at` (parsing the
output file and journaling every line).

Run: python bench/batchapi.py [--rows 10000] [--chunk 2000] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    OUT,
    ROOT,
    Table,
    _wait4,
    fmt,
    header,
    iter_prompts,
    save_report,
    start_simulator,
    verdict,
    write_prompts,
)
from crash import check_output, read_ledger, start

KEY = "sk-bench-batchapi-00000001"
MODEL = "sim-model"
LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


# ---------------------------------------------------------------------------------------------
# The hand-written contender (the OpenAI cookbook's Batch API recipe, with aiohttp)


def write_requests(job: dict[str, Any]) -> Path:
    """Write one JSONL holding a request for every input row; return its path."""
    path = Path(job["work"]) / "batchinput.jsonl"
    with path.open("w", encoding="utf-8") as f, Path(job["input"]).open(encoding="utf-8") as i:
        for n, line in enumerate(i):
            body = {"model": job["model"], "messages": [{"role": "user", "content": ""}]}
            body["messages"][0]["content"] = json.loads(line)["prompt"]
            req = {"custom_id": f"request-{n}", "method": "POST", "url": "/v1/chat/completions"}
            req["body"] = body
            f.write(json.dumps(req, ensure_ascii=False) + "\n")
    return path


async def upload_and_wait(job: dict[str, Any], data: bytes) -> tuple[str, bytes]:
    """Upload `data`, create a batch of it, poll until it ends; return its id and its output."""
    import aiohttp

    base = job["base_url"].rstrip("/")
    auth = {"Authorization": f"Bearer {job['key']}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", data, filename="batchinput.jsonl")
        async with http.post(f"{base}/files", data=form) as r:
            r.raise_for_status()
            file_id = (await r.json())["id"]
        create = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"description": "nightly eval job"},
        }
        async with http.post(f"{base}/batches", json=create) as r:
            r.raise_for_status()
            batch = await r.json()
        while batch["status"] in LIVE:
            await asyncio.sleep(job["poll_s"])
            async with http.get(f"{base}/batches/{batch['id']}") as r:
                r.raise_for_status()
                batch = await r.json()
        if batch["status"] != "completed" or not batch["output_file_id"]:
            raise RuntimeError(f"batch {batch['id']} ended {batch['status']}")
        async with http.get(f"{base}/files/{batch['output_file_id']}/content") as r:
            r.raise_for_status()
            return batch["id"], await r.read()


def hand_written(job: dict[str, Any]) -> dict[str, Any]:
    """The cookbook's recipe: one JSONL of every request, upload, create, poll, download.

    No state is kept between runs: a rerun starts again from the upload. The answers are
    written to `job["output"]` as `{"id", "response"}` rows in input order.
    """
    t0 = time.monotonic()
    path = write_requests(job)
    batch_id, output = asyncio.run(upload_and_wait(job, path.read_bytes()))
    t1 = time.monotonic()
    answers: dict[int, str] = {}
    for raw in output.splitlines():
        line = json.loads(raw)
        body = line["response"]["body"]
        answers[int(line["custom_id"].split("-")[1])] = body["choices"][0]["message"]["content"]
    with Path(job["output"]).open("w", encoding="utf-8") as f:
        for n in sorted(answers):
            f.write(json.dumps({"id": n, "response": answers[n]}, ensure_ascii=False) + "\n")
    t2 = time.monotonic()
    return {"batch_id": batch_id, "rows": len(answers), "batch_s": t1 - t0, "collect_s": t2 - t1}


# ---------------------------------------------------------------------------------------------
# Driving one contender: a killed leg, then the same command again


class LineTail:
    """Follows a simulator's ledger file as it grows, counting batch lines and creations."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._f: Any = None
        self._partial = ""
        self.lines = 0
        self.creates = 0

    def poll(self) -> int:
        """Read what was appended since the last poll; return the batch lines so far."""
        if self._f is None:
            if not self._path.exists():
                return 0
            self._f = self._path.open(encoding="utf-8")
        chunk = self._f.read()
        if chunk:
            text = self._partial + chunk
            entries = text.split("\n")
            self._partial = entries.pop()
            self.lines += sum(1 for e in entries if '"event": "batch_line"' in e)
            self.creates += sum(1 for e in entries if '"event": "batch_create"' in e)
        return self.lines

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def finish(proc: subprocess.Popen[str], timeout_s: float) -> tuple[int, float]:
    """Wait for `proc` (SIGKILL after `timeout_s`); return its exit code and its CPU seconds."""
    status, usage = _wait4(proc.pid, time.monotonic() + timeout_s)
    if status is None:
        proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def settle(base_url: str, timeout_s: float) -> int:
    """Wait until no batch at the provider is live; return how many are still live."""
    deadline = time.monotonic() + timeout_s
    while True:
        req = urllib.request.Request(
            f"{base_url.rstrip('/')}/batches?limit=100",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            live = sum(1 for b in json.load(r)["data"] if b["status"] in LIVE)
        if live == 0 or time.monotonic() >= deadline:
            return live
        time.sleep(0.2)


def use_this_tree() -> None:
    """Put this tree's `src` first on the PYTHONPATH the contenders' processes inherit."""
    paths = (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def journal_view(work: Path) -> dict[str, Any]:
    """Return what squall's journal holds of its batches (None when there is no journal)."""
    from squall.journal import Journal

    path = work / "out.jsonl.squall.sqlite"
    if not path.exists():
        return {"chunks": 0, "with_batch_id": 0, "records": []}
    with Journal.open(path, read_only=True) as jr:
        recs = jr.batches.records()
    return {
        "chunks": len(recs),
        "with_batch_id": sum(1 for r in recs if r.batch_id),
        "records": recs,
    }


def collect_spans(
    records: list[Any], ledger: list[dict[str, Any]], offset: float
) -> list[tuple[float, float]]:
    """Return (output downloaded, chunk journaled) wall times of every collected chunk."""
    downloaded = {e["file_id"]: e["t"] for e in ledger if e.get("event") == "file_download"}
    out = []
    for r in records:
        t = downloaded.get(r.output_file_id)
        if t is not None and r.collected_at is not None:
            out.append((t + offset, r.collected_at))
    return out


def union_s(spans: list[tuple[float, float]]) -> float:
    """Return the seconds covered by at least one of `spans` (chunks collect side by side)."""
    total, end = 0.0, -math.inf
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def one_contender(
    name: str, args: argparse.Namespace, rows: Path, prompts: list[str]
) -> dict[str, Any]:
    """Kill contender `name` in the middle of its batches, rerun it; return the counts."""
    from squall.simulator import BatchSettings, SimConfig, SimKey, prompt_digest

    n = len(prompts)
    work = OUT / f"batchapi-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ledger_path = work / "ledger.jsonl"
    settings = BatchSettings(
        validating_s=60.0,
        line_s=0.05,
        finalizing_s=60.0,
        cancelling_s=1.0,
        time_scale=args.time_scale,
    )
    sim = SimConfig(keys=(SimKey(key=KEY),), batches=settings, seed=7)
    digest_row = {prompt_digest(p): i for i, p in enumerate(prompts)}
    offset = time.time() - time.monotonic()  # the ledger's t is time.monotonic() (one host)
    with start_simulator(sim, ledger_path) as server:
        if name == "squall":
            (work / "squall.toml").write_text(
                f'model = "{MODEL}"\nprogress = "off"\nbatch_api = true\n'
                f"batch_poll_s = {args.poll_s}\nbatch_max_requests = {args.chunk}\n"
                f'[[endpoints]]\nname = "sim"\nbase_url = "{server.base_url}"\n'
                f'rpm = inf\nkeys = ["{KEY}"]\n',
                encoding="utf-8",
            )
            cmd = [sys.executable, "-m", "squall", "run", str(rows), "-o", str(work / "out.jsonl")]
            cmd += ["-c", str(work / "squall.toml"), "--batch-api"]
        else:
            job = {
                "base_url": server.base_url,
                "key": KEY,
                "model": MODEL,
                "input": str(rows),
                "output": str(work / "out.jsonl"),
                "work": str(work),
                "poll_s": args.poll_s,
            }
            (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--hand", str(work / "job.json")]

        # First leg: SIGKILL once the provider has answered `kill_at` of the rows.
        tail = LineTail(ledger_path)
        t0 = time.monotonic()
        proc = start(cmd, work, None, "first")
        deadline = t0 + args.timeout
        killed = False
        while time.monotonic() < deadline and proc.poll() is None:
            if tail.poll() >= args.kill_at * n and tail.creates > 0:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.005)
        rc1, cpu1 = finish(proc, args.timeout)
        wall1 = time.monotonic() - t0
        lines_at_kill, creates_at_kill = tail.lines, tail.creates
        tail.close()
        view1 = journal_view(work) if name == "squall" else None

        # Second leg: the same command, to the end.
        t1 = time.monotonic()
        proc = start(cmd, work, None, "resume")
        rc2, cpu2 = finish(proc, args.timeout)
        wall2 = time.monotonic() - t1
        still_live = settle(server.base_url, args.timeout)
    ledger = read_ledger(ledger_path)
    lines = [e for e in ledger if e.get("event") == "batch_line"]
    ok_lines = [e for e in lines if e["status"] == 200]
    per_row = Counter(digest_row[e["prompt_sha256"]] for e in ok_lines)
    batches_of: dict[int, set[str]] = defaultdict(set)
    for e in lines:
        batches_of[digest_row[e["prompt_sha256"]]].add(e["batch_id"])
    result: dict[str, Any] = {
        "contender": name,
        "command": " ".join(cmd),
        "killed": killed,
        "lines_at_kill": lines_at_kill,
        "batches_at_kill": creates_at_kill,
        "first_wall_s": wall1,
        "first_rc": rc1,
        "first_cpu_s": cpu1,
        "second_wall_s": wall2,
        "second_rc": rc2,
        "second_cpu_s": cpu2,
        "wall_s": wall1 + wall2,
        "rows_answered": len(per_row),
        "lines_answered": len(ok_lines),
        "batches_created": sum(1 for e in ledger if e.get("event") == "batch_create"),
        "files_uploaded": sum(1 for e in ledger if e.get("event") == "file_upload"),
        "rows_in_two_batches": sum(1 for b in batches_of.values() if len(b) > 1),
        "rows_paid_twice": sum(1 for c in per_row.values() if c > 1),
        "sent_online": sum(1 for e in ledger if e.get("event") == "request"),
        "live_at_end": still_live,
        "output": check_output("squall", work, prompts),  # both write {"id", "response"} rows
    }
    if view1 is not None:
        view2 = journal_view(work)
        result["journal_chunks_at_kill"] = view1["chunks"]
        result["journal_batch_ids_at_kill"] = view1["with_batch_id"]
        spans = collect_spans(view2["records"], ledger, offset)
        collected = sum(r.rows for r in view2["records"] if r.collected_at is not None)
        busy = union_s(spans)
        result["collect_s"] = [b - a for a, b in spans]
        result["collect_busy_s"] = busy
        result["collect_rows_per_s"] = collected / busy if busy > 0 else None
    return result


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def main(argv: list[str] | None = None) -> int:
    """Run both contenders and print the table; return 0 when squall meets its targets."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=2000, help="squall's batch_max_requests")
    ap.add_argument("--kill-at", type=float, default=0.2, help="share of rows answered")
    ap.add_argument("--time-scale", type=float, default=0.01, help="simulator batch time_scale")
    ap.add_argument("--poll-s", type=float, default=0.2, help="seconds between polls (both)")
    ap.add_argument("--contenders", default="squall,hand")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per leg")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (bench/out/batchapi.json)")
    ap.add_argument("--hand", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.hand is not None:  # the hand-written contender's own process
        job = json.loads(args.hand.read_text(encoding="utf-8"))
        print(json.dumps(hand_written(job)))
        return 0
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    use_this_tree()

    print(header("bench/batchapi", sys.argv))
    rows = write_prompts(OUT / f"batchapi-{args.rows}.jsonl", args.rows)
    prompts = [p for _, p in iter_prompts(rows)]
    results = []
    for name in names:
        r = one_contender(name, args, rows, prompts)
        results.append(r)
        print(
            f"  {name:<6} killed after {r['lines_at_kill']} lines ({r['batches_at_kill']} "
            f"batches): {r['rows_answered']} rows answered, {r['rows_paid_twice']} paid twice, "
            f"rerun exit {r['second_rc']}",
            flush=True,
        )

    table = Table(
        [
            "contender",
            "lines at kill",
            "killed leg s",
            "rerun s",
            "total s",
            "client CPU s",
            "rows answered",
            "lines paid",
            "batches created",
            "rows in two batches",
            "rows paid twice",
            "sent online",
            "rerun exit",
            "final output",
        ]
    )
    for r in results:
        table.add(
            r["contender"],
            f"{r['lines_at_kill']}" + ("" if r["killed"] else " (ended first)"),
            fmt(r["first_wall_s"], 1),
            fmt(r["second_wall_s"], 1),
            fmt(r["wall_s"], 1),
            fmt(r["first_cpu_s"] + r["second_cpu_s"], 1),
            f"{r['rows_answered']}/{args.rows}",
            r["lines_answered"],
            r["batches_created"],
            r["rows_in_two_batches"],
            r["rows_paid_twice"],
            r["sent_online"],
            r["second_rc"],
            r["output"],
        )
    expected_batches = math.ceil(args.rows / args.chunk)
    print(
        f"\n{args.rows} rows; squall in batches of {args.chunk}, by hand in one; batches take "
        f"validating 60 s + 0.05 s a line + finalizing 60 s nominal, x {args.time_scale:g}; "
        f"SIGKILL once {args.kill_at:.0%} of the rows were answered, then the same command "
        "again\n"
    )
    print(table.render())
    by = {r["contender"]: r for r in results}
    ratios: dict[str, float | None] = {}
    ok = True
    sq = by.get("squall")
    if sq is not None:
        rate = sq.get("collect_rows_per_s")
        print(
            f"\nsquall at the kill: {sq['journal_chunks_at_kill']} chunks journaled, "
            f"{sq['journal_batch_ids_at_kill']} with their batch id; collect (download to "
            f"journaled) per chunk {', '.join(fmt(s, 2) for s in sq['collect_s'])} s, "
            f"{fmt(sq['collect_busy_s'], 2)} s in all: {fmt(rate, 0)} rows/s"
        )
        ok = (
            sq["rows_in_two_batches"] == 0
            and sq["rows_paid_twice"] == 0
            and sq["sent_online"] == 0
            and sq["second_rc"] == 0
            and sq["batches_created"] == expected_batches
            and sq["output"].startswith("complete")
        )
        print(
            f"target 0 rows in two batches: {sq['rows_in_two_batches']} -> "
            f"{verdict(sq['rows_in_two_batches'] == 0)}\n"
            f"target 0 rows sent online: {sq['sent_online']} -> {verdict(sq['sent_online'] == 0)}\n"
            f"target {expected_batches} batches created: {sq['batches_created']} -> "
            f"{verdict(sq['batches_created'] == expected_batches)}\n"
            f"final output complete and correct: {verdict(sq['output'].startswith('complete'))}"
        )
    hd = by.get("hand")
    if sq is not None and hd is not None:
        ratios = {
            "rows_paid_twice": ratio(sq["rows_paid_twice"], hd["rows_paid_twice"]),
            "wall_s": ratio(sq["wall_s"], hd["wall_s"]),
            "rerun_wall_s": ratio(sq["second_wall_s"], hd["second_wall_s"]),
        }
        print(
            f"squall / hand-written: rows paid twice {sq['rows_paid_twice']} / "
            f"{hd['rows_paid_twice']} = {fmt(ratios['rows_paid_twice'], 3)}x; wall time "
            f"{fmt(sq['wall_s'], 1)} / {fmt(hd['wall_s'], 1)} s = {fmt(ratios['wall_s'], 2)}x "
            f"(reruns: {fmt(ratios['rerun_wall_s'], 2)}x)"
        )
    data = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    data["ratios_squall_vs_hand"] = ratios
    if args.out is None:
        path = save_report("batchapi", data)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        path = args.out
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
