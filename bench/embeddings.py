"""bench/embeddings: rows/s embedding N short texts on one key limited to 10 requests/s.

The provider simulator (`squall.simulator`, its own process, a fresh one per contender so each
starts with a full bucket) serves one key limited to 600 requests/minute (a token bucket one
second deep: 10 requests/s), no token limit, no latency. Contenders, in the same run:

    squall-packed   squall, `--api embeddings`, rpm = 600 declared, the default packing
                    (`embeddings_max_inputs` = 512 inputs per request): does all N rows
    squall-one      the same with `embeddings_max_inputs` = 1 (one input per request)
    cookbook        a re-implementation (below, `cookbook_main`) of the OpenAI cookbook's
                    "api_request_parallel_processor" approach, given the same limit

One input per request at 10 requests/s would take N / 10 s, so the one-per-request contenders
are stopped after `--budget-s` (default 20 s: the child process is killed) and their rate is
what they finished in that time; the table also gives their projected time for all N rows.
"rows done" counts the inputs of requests the simulator answered 200 (from its ledger), so a
killed contender is counted by what the provider served it; "requests sent" and "429s" come
from the ledger too. "wall s" is the contender's child process, interpreter start included.

squall-packed is checked: every row of its output must hold the simulator's deterministic
vector for its text (`expected_embedding(text, 64)`).

Run: python bench/embeddings.py [--rows 20000] [--budget-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    OUT,
    Table,
    fmt,
    header,
    iter_prompts,
    run_child,
    save_report,
    start_simulator,
    write_prompts,
)

KEY = "sk-bench-embed-10rps-eeee"
RPM = 600.0
MODEL = "sim-embed"
CONTENDERS = ("squall-packed", "squall-one", "cookbook")


# ---------------------------------------------------------------------------------------------
# The contenders (each runs in a child process: `python bench/embeddings.py --child NAME JOB`)


def squall_main(job: dict[str, Any]) -> dict[str, Any]:
    """Run squall on the job's texts; return its summary."""
    import squall
    from squall.redact import ApiKey

    endpoint = squall.EndpointConfig(
        name="sim",
        base_url=job["base_url"],
        keys=(squall.KeyConfig(key=ApiKey(KEY)),),
        rpm=RPM,
    )
    cfg = squall.RunConfig(model=MODEL, endpoints=(endpoint,), progress="off").model_copy(
        update={"embeddings_max_inputs": job["max_inputs"]}
    )
    texts = [t for _, t in iter_prompts(Path(job["input"]))]
    started = time.monotonic()
    res = squall.run(texts, output=job["output"], config=cfg, api="embeddings", restart=True)
    wall = time.monotonic() - started
    s = res.summary
    return {"done": s.done, "failed": s.failed, "wall_s": wall, "exit_code": res.exit_code}


async def cookbook_run(job: dict[str, Any]) -> dict[str, Any]:
    """One input per request, paced the way the OpenAI cookbook's parallel processor paces.

    The algorithm (re-implemented here, not copied): two capacity counters, requests and
    tokens, start full at `max_requests_per_minute` and `max_tokens_per_minute` and refill
    continuously at limit/60 per second, capped at the per-minute limit. A loop takes the next
    request (retries first, from a queue), waits until both counters hold enough for it (one
    request, its estimated tokens), spends them and launches the request as a task, sleeping
    about 1 ms between turns. A request that fails goes back on the retry queue with one
    attempt fewer (5 in all); one that fails with a rate-limit error also records the time,
    and the loop then launches nothing until 15 s after the latest rate-limit error. No
    concurrency cap beyond the counters.
    """
    import aiohttp

    max_rpm = float(job["rpm"])
    max_tpm = float(job["tpm"])
    url = job["base_url"].rstrip("/") + "/embeddings"
    headers = {"Authorization": f"Bearer {KEY}"}
    pause_after_429 = 15.0
    texts = iter_prompts(Path(job["input"]))
    retries: list[tuple[int, str, int]] = []
    req_cap, tok_cap = max_rpm, max_tpm
    last_update = time.monotonic()
    last_429 = -1e9
    in_flight = 0
    stats = {"done": 0, "failed": 0, "errors": 0, "rate_limited": 0}
    started = time.monotonic()
    exhausted = False

    async def call(session: aiohttp.ClientSession, i: int, text: str, attempts: int) -> None:
        nonlocal in_flight, last_429
        try:
            body = {"model": MODEL, "input": text}
            async with session.post(url, json=body, headers=headers) as resp:
                data = await resp.json(content_type=None)
                if resp.status == 200 and data.get("data"):
                    stats["done"] += 1
                    return
                stats["errors"] += 1
                if resp.status == 429 or "rate limit" in json.dumps(data).lower():
                    stats["rate_limited"] += 1
                    last_429 = time.monotonic()
        except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
            stats["errors"] += 1
        finally:
            in_flight -= 1
        if attempts > 1:
            retries.append((i, text, attempts - 1))
        else:
            stats["failed"] += 1

    conn = aiohttp.TCPConnector(limit=0)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=conn) as session:
        nxt: tuple[int, str, int] | None = None
        while True:
            if nxt is None:
                if retries:
                    nxt = retries.pop(0)
                elif not exhausted:
                    try:
                        i, text = next(texts)
                        nxt = (i, text, 5)
                    except StopIteration:
                        exhausted = True
            now = time.monotonic()
            req_cap = min(req_cap + (now - last_update) * max_rpm / 60.0, max_rpm)
            tok_cap = min(tok_cap + (now - last_update) * max_tpm / 60.0, max_tpm)
            last_update = now
            if nxt is not None:
                tokens = max(1, len(nxt[1]) // 4)
                if req_cap >= 1 and tok_cap >= tokens:
                    req_cap -= 1
                    tok_cap -= tokens
                    in_flight += 1
                    t = asyncio.create_task(call(session, *nxt))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    nxt = None
            if nxt is None and exhausted and not retries and in_flight == 0:
                break
            await asyncio.sleep(0.001)
            since = time.monotonic() - last_429
            if since < pause_after_429:
                await asyncio.sleep(pause_after_429 - since)
    return {**stats, "wall_s": time.monotonic() - started}


def child(name: str, job: dict[str, Any]) -> int:
    """Run contender `name` on `job`; print its report as one JSON line."""
    rep = asyncio.run(cookbook_run(job)) if name == "cookbook" else squall_main(job)
    print(json.dumps(rep), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The harness


def ledger_figures(path: Path) -> dict[str, Any]:
    """Return requests, 429s and the rows served (inputs of 200 answers) from the ledger."""
    from squall.testing import read_ledger_file

    entries = [e for e in read_ledger_file(path) if e.event == "request"]
    return {
        "requests": len(entries),
        "rate_limited": sum(1 for e in entries if e.status == 429),
        "rows_served": sum(e.inputs for e in entries if e.served),
        "inputs_per_request": max((e.inputs for e in entries), default=0),
    }


def verify(texts: Path, output: Path, n: int) -> str:
    """Return "ok" when every output row holds the simulator's vector for its text."""
    from squall.simulator.answers import expected_embedding

    want = {t: i for i, t in iter_prompts(texts)}
    seen = 0
    bad = 0
    with output.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            seen += 1
            text = row["prompt"]
            if text not in want or row.get("embedding") != expected_embedding(text, 64):
                bad += 1
    if seen != n or bad:
        return f"FAILED: {seen}/{n} rows, {bad} wrong vectors"
    return f"ok: {n}/{n} rows, each vector = expected_embedding(text, 64)"


def run_contender(name: str, texts: Path, n: int, budget_s: float) -> dict[str, Any]:
    """Run one contender against a fresh simulator; return its figures."""
    from squall.testing import SimConfig, SimKey

    sim = SimConfig(keys=(SimKey(key=KEY, rpm=RPM),), latency_s=0.0, seed=1)
    tag = f"embeddings-{name}"
    ledger = OUT / f"{tag}.ledger.jsonl"
    output = OUT / f"{tag}.jsonl"
    output.unlink(missing_ok=True)
    for p in OUT.glob(f"{tag}.jsonl.squall.sqlite*"):
        p.unlink()
    budget = None if name == "squall-packed" else budget_s
    with start_simulator(sim, ledger) as server:
        job = {
            "base_url": server.base_url,
            "input": str(texts),
            "output": str(output),
            "max_inputs": 1 if name == "squall-one" else 512,
            "rpm": RPM,
            "tpm": 1e12,  # nothing declared: the cookbook's counter must not bind
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(job)]
        res = run_child(argv, timeout_s=budget if budget else 1200.0)
    led = ledger_figures(ledger)
    rows = led["rows_served"]
    figures: dict[str, Any] = {
        "name": name,
        "rc": res.rc,
        "stopped_at_budget": res.killed,
        "wall_s": res.wall_s,
        "rows_done": rows,
        "rate": rows / res.wall_s if res.wall_s else None,
        "report": res.report,
        "ledger": led,
        "cpu_pressure_pct": res.cpu_pressure_pct,
        "stderr_tail": res.stderr[-2000:],
    }
    figures["projected_s"] = n / figures["rate"] if figures["rate"] else None
    if name == "squall-packed":
        figures["check"] = verify(texts, output, n) if output.exists() else "FAILED: no output"
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 when squall packed's rows all check."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], json.loads(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--budget-s", type=float, default=20.0)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.contenders.split(",") if c.strip()]

    print(header("bench/embeddings", sys.argv))
    texts = write_prompts(OUT / f"embeddings-{args.rows}.jsonl", args.rows)
    results = []
    for name in names:
        f = run_contender(name, texts, args.rows, args.budget_s)
        results.append(f)
        print(f"  {name:<14} {f['rows_done']} rows in {fmt(f['wall_s'])} s", flush=True)

    base = next((f for f in results if f["name"] == "squall-packed"), None)
    table = Table(
        [
            "contender",
            "rows done",
            "requests sent",
            "429s",
            "wall s",
            "rows/s",
            "x squall packed",
            f"projected s for {args.rows}",
            "CPU pressure %",
        ]
    )
    for f in results:
        led = f["ledger"]
        ratio = f["rate"] / base["rate"] if base and base["rate"] and f["rate"] else None
        table.add(
            f["name"] + (" (stopped at budget)" if f["stopped_at_budget"] else ""),
            f"{f['rows_done']}/{args.rows}",
            led["requests"],
            led["rate_limited"],
            fmt(f["wall_s"], 1),
            fmt(f["rate"], 1),
            fmt(ratio, 4),
            fmt(f["projected_s"], 0),
            fmt(f["cpu_pressure_pct"], 0),
        )
    print(
        f"\none key limited to {RPM:g} requests/minute (bucket 1 s deep: 10/s), 0 ms latency, "
        f"{args.rows} texts; one-per-request contenders stopped after {args.budget_s:g} s\n"
    )
    print(table.render())
    ok = True
    if base is not None:
        print(f"\nsquall packed check: {base['check']}")
        ok = base["check"].startswith("ok")
    path = save_report("embeddings", {"args": vars(args), "results": results})
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
