"""bench/pool: how close a pool of uneven keys gets to the sum of their limits, and at what 429s.

The provider simulator (`squall.simulator`, its own process, a fresh one per contender so every
contender starts with full buckets) serves three keys limited to 40, 20 and 4 requests/s (token
buckets one second deep, as providers enforce per-minute limits), 50 ms latency. 1500 prompts:

    squall           the three keys with their limits declared (rpm = 2400, 1200, 240)
    squall-discover  the same keys with no limits declared: squall finds them (slow start)
    seed             the seed's AsyncLLMAPI, one per key, each limiter set to its key's true
                     limit, round-robin over keys, chunks of 500 under gather

Rates are rows saved / wall time of the run, measured inside the contender's process (the
interpreter start excluded; squall's ingest and output passes included). 429s come from the
simulator's ledger, so they count every refused request, retries included. "longest pause" is
the longest time the provider saw no request at all (at 64/s it should be ~16 ms; a long one
means the client was starved of CPU), and "CPU pressure" the share of the run during which
some task on the machine waited for a CPU (Linux PSI): this benchmark is about timing, and on a
busy machine its rates say as much about the machine as about the client.

Target (issue 2): squall (declared limits) >= 0.95 of the sum of the limits, < 1% of requests
answered 429.

`--scenario caps` instead caps three keys at 8, 4 and 2 requests in flight (no rate limit;
over the cap the simulator answers 429 + Retry-After 1 s, worded like a rate limit, as many
relays do), 50 ms latency, so at most 160, 80 and 40 requests/s get through:

    squall           rpm = inf declared, concurrency left at its default (64): squall must find
                     each key's cap from its 429s
    squall-declared  each key's cap declared (max_concurrency = 8, 4, 2): the reference
    seed             the seed's class, each limiter set to what its key's cap lets through
                     (cap / latency requests/s)

`--limits` says how the simulator enforces the rates scenario's per-minute limits: "bucket"
(token buckets one second deep), "sliding" (sliding windows of one second: any second holds at
most 40, 20 and 4 requests, so jitter a bucket absorbs is refused, issue 11), or "both"
(the default: every contender runs against each, one table row per run). The target applies to
the bucket runs; the sliding runs are reported beside them. The caps scenario has no
per-minute limits, so it ignores `--limits`.

`--retry-after none` has the simulator's 429s carry no Retry-After (nor retry-after-ms): a
client must choose its own backoff, and discovery its own pace (issue 11: "reached to >= 0.9
within 10 s of the first 429, with or without Retry-After"); `both` runs each contender with
and without (the default, `seconds`, is Retry-After in whole seconds).

`--scenario open` is one key with no limit at all (concurrency 64), 0 ms latency by default
(`--latency` still applies): `squall` declares `rpm = inf`, `squall-discover` declares nothing
and must grow to what the endpoint takes (issue 11: discovering should reach >= 0.8x the rate
of `rpm = inf`). Use `--prompts 20000` for the issue's figure.

Run: python bench/pool.py [--prompts 1500] [--latency 0.05] [--scenario rates|caps|open]
     [--contenders squall,squall-discover,seed] [--limits bucket|sliding|both]
     [--retry-after seconds|none|both]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    OUT,
    Table,
    fmt,
    header,
    run_client,
    save_report,
    start_simulator,
    verdict,
    write_prompts,
)

LIMITS_RPS = (40.0, 20.0, 4.0)
CAPS = (8, 4, 2)
# The last four characters differ, so the masked keys (sk-...abcd) in the ledger tell them apart.
KEYS = tuple(f"sk-bench-pool-{int(r)}rps-{c * 4}" for r, c in zip(LIMITS_RPS, "abc", strict=True))
CAPPED_KEYS = tuple(f"sk-bench-pool-cap{n}-{c * 4}" for n, c in zip(CAPS, "def", strict=True))
OPEN_KEY = "sk-bench-pool-open-gggg"


def ledger_figures(path: Path) -> dict[str, Any]:
    """Return what the simulator's ledger says: requests, 429s, answers, and the answer rate."""
    from squall.testing import read_ledger_file

    entries = read_ledger_file(path)
    served = [e for e in entries if e.served]
    n429 = sum(1 for e in entries if e.status == 429)
    span = served[-1].t - served[0].t if len(served) > 1 else 0.0
    times = sorted(e.t for e in entries)
    pause = max((b - a for a, b in itertools.pairwise(times)), default=None)
    by_key: dict[str, dict[str, int]] = {}
    for e in entries:
        k = by_key.setdefault(e.key, {"requests": 0, "429": 0, "served": 0})
        k["requests"] += 1
        k["429"] += e.status == 429
        k["served"] += e.served
    return {
        "requests": len(entries),
        "rate_limited": n429,
        "served": len(served),
        "served_distinct": len({e.prompt_sha256 for e in served}),
        "provider_rate": (len(served) - 1) / span if span > 0 else None,
        "longest_pause_s": pause,
        "by_key": by_key,
    }


def scenario(
    name: str, contender: str, latency: float, limits: str = "bucket", retry: str = "seconds"
) -> tuple[Any, list[dict[str, Any]], float]:
    """Return the simulator's config, the contender's keys and the sum of what the keys allow
    (0 for the open scenario: no limit).

    `limits` ("bucket" or "sliding") is how the rates scenario's keys are limited; `retry`
    ("seconds" or "none") how the simulator's 429s say when to come back.
    """
    from squall.testing import SimConfig, SimKey

    if name == "open":
        sim = SimConfig(keys=(SimKey(key=OPEN_KEY),), latency_s=latency, seed=1)
        declared = "discover" if contender == "squall-discover" else None
        return sim, [{"key": OPEN_KEY, "rps": declared}], 0.0

    if name == "caps":
        capped = list(zip(CAPPED_KEYS, CAPS, strict=True))
        sim = SimConfig(
            keys=tuple(SimKey(key=k, max_concurrency=n) for k, n in capped),
            latency_s=latency,
            busy_wording="rate",
            seed=1,
        )
        if contender == "seed":
            keys = [{"key": k, "rps": n / latency} for k, n in capped]
        elif contender == "squall-declared":
            keys = [{"key": k, "rps": None, "concurrency": n} for k, n in capped]
        else:
            keys = [{"key": k, "rps": None} for k in CAPPED_KEYS]
        return sim, keys, sum(CAPS) / latency
    sim = SimConfig(
        keys=tuple(
            SimKey(key=k, rpm=r * 60.0, limit_mode=limits, window_s=1.0)
            for k, r in zip(KEYS, LIMITS_RPS, strict=True)
        ),
        latency_s=latency,
        retry_after="none" if retry == "none" else "seconds",
        seed=1,
    )
    rps: list[Any] = ["discover"] * 3 if contender == "squall-discover" else list(LIMITS_RPS)
    return sim, [{"key": k, "rps": r} for k, r in zip(KEYS, rps, strict=True)], sum(LIMITS_RPS)


def run_contender(
    name: str,
    prompts: Path,
    latency: float,
    timeout_s: float,
    scenario_name: str = "rates",
    limits: str = "bucket",
    retry: str = "seconds",
) -> dict[str, Any]:
    """Run one contender against a fresh simulator; return its figures."""
    sim, keys, _ = scenario(scenario_name, name, latency, limits, retry)
    tag = f"pool-{name}" if scenario_name == "rates" else f"pool-{scenario_name}-{name}"
    if limits == "sliding":
        tag = f"pool-sliding-{name}"
    if retry == "none":
        tag += "-no-retry-after"
    ledger = OUT / f"{tag}.ledger.jsonl"
    for p in OUT.glob(f"{tag}.sqlite*"):
        p.unlink()
    output = OUT / (tag if name == "seed" else f"{tag}.jsonl")
    if name == "seed" and output.exists():
        for p in output.glob("*.csv"):
            p.unlink()
    client = "seed" if name == "seed" else "squall"
    with start_simulator(sim, ledger) as server:
        job = {
            "base_url": server.base_url,
            "keys": keys,
            "input": str(prompts),
            "output": str(output),
            "journal": str(OUT / f"{tag}.sqlite"),
            "concurrency": 64,
            "chunk_size": 500,
        }
        res = run_client(client, job, timeout_s=timeout_s)
    rep = res.report
    figures: dict[str, Any] = {
        "name": name,
        "limits": limits,
        "retry_after": retry,
        "rc": res.rc,
        "done": int(rep.get("done", 0) or 0),
        "wall_s": rep.get("wall_s"),
        "error": rep.get("error"),
        "report": rep,
        "command": res.command,
        "cpu_pressure_pct": res.cpu_pressure_pct,
        "ledger": ledger_figures(ledger),
    }
    if name == "seed" and figures["error"]:
        # The seed's run ended early: count what it did save (one CSV per finished chunk).
        saved = 0
        for csv in output.glob("*_bench.csv"):
            if not csv.name.startswith("all_"):
                saved += sum(1 for _ in csv.open(encoding="utf-8")) - 1
        figures["done"] = saved
    wall = figures["wall_s"]
    figures["rate"] = figures["done"] / wall if wall else None
    return figures


def target_met(sq: dict[str, Any], total: float, prompts: int, mode: str) -> bool:
    """Print whether squall's run met the target (>= 0.95 of the sum, < 1% 429s); return it."""
    frac = sq["rate"] / total if sq["rate"] else 0.0
    led = sq["ledger"]
    pct = 100.0 * led["rate_limited"] / led["requests"] if led["requests"] else 100.0
    note = "" if mode == "bucket" else " (reported, not the exit status)"
    print(
        f"\n{mode}{note}:\n"
        f"target >= 0.95 of the sum: {fmt(frac)} -> {verdict(frac >= 0.95)}\n"
        f"target < 1% 429s: {fmt(pct, 2)}% -> {verdict(pct < 1.0)}\n"
        f"issue 11 (both modes, reported): >= 0.97 of the sum -> {verdict(frac >= 0.97)}, "
        f"< 0.5% 429s -> {verdict(pct < 0.5)}"
    )
    return frac >= 0.95 and pct < 1.0 and sq["done"] == prompts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 when squall meets the target."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1500)
    ap.add_argument("--latency", type=float, default=None, help="default 0.05 (open: 0)")
    ap.add_argument("--scenario", choices=("rates", "caps", "open"), default="rates")
    ap.add_argument("--contenders", default=None, help="default: all of the scenario's")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per contender run")
    ap.add_argument(
        "--limits",
        choices=("bucket", "sliding", "both"),
        default="both",
        help="how the rates scenario's limits are enforced (default: both, in turn)",
    )
    ap.add_argument(
        "--retry-after",
        choices=("seconds", "none", "both"),
        default="seconds",
        help="whether the rates scenario's 429s carry Retry-After (default: seconds)",
    )
    args = ap.parse_args(argv)
    caps = args.scenario == "caps"
    open_ = args.scenario == "open"
    if args.latency is None:
        args.latency = 0.0 if open_ else 0.05
    modes = (
        ["bucket"]
        if caps or open_
        else (["bucket", "sliding"] if args.limits == "both" else [args.limits])
    )
    retries = ["seconds", "none"] if args.retry_after == "both" else [args.retry_after]
    if caps or open_:
        retries = ["seconds"]
    default = "squall,squall-declared,seed" if caps else "squall,squall-discover,seed"
    if open_:
        default = "squall,squall-discover"
    names = [n.strip() for n in (args.contenders or default).split(",") if n.strip()]

    print(header("bench/pool", sys.argv))
    prompts = write_prompts(OUT / f"pool-{args.prompts}.jsonl", args.prompts)
    total = scenario(args.scenario, "squall", args.latency)[2]
    results = []
    for mode, retry, name in itertools.product(modes, retries, names):
        f = run_contender(name, prompts, args.latency, args.timeout, args.scenario, mode, retry)
        results.append(f)
        print(
            f"  {mode:<8} {retry:<8} {name:<16} {f['done']} rows saved in {fmt(f['wall_s'])} s"
            + (f"  ENDED BY {f['error']}" if f["error"] else ""),
            flush=True,
        )

    table = Table(
        [
            "limits",
            "Retry-After",
            "contender",
            "rows saved",
            "wall s",
            "rows/s",
            "x sum of limits",
            "requests sent",
            "429s",
            "429 %",
            "provider-side answers/s",
            "paid, not saved",
            "longest pause s",
            "CPU pressure %",
            "outcome",
        ]
    )
    for f in results:
        led = f["ledger"]
        pct = 100.0 * led["rate_limited"] / led["requests"] if led["requests"] else None
        outcome = "completed" if not f["error"] else f"crashed: {f['error'][:70]}"
        table.add(
            f["limits"],
            f["retry_after"],
            f["name"],
            f"{f['done']}/{args.prompts}",
            fmt(f["wall_s"], 1),
            fmt(f["rate"], 1),
            fmt(f["rate"] / total if f["rate"] and total else None),
            led["requests"],
            led["rate_limited"],
            fmt(pct, 2),
            fmt(led["provider_rate"], 1),
            max(0, led["served_distinct"] - f["done"]),
            fmt(led["longest_pause_s"]),
            fmt(f["cpu_pressure_pct"], 0),
            outcome,
        )
    if open_:
        print(
            f"\none key with no limit, concurrency 64, {args.latency * 1000:g} ms latency, "
            f"{args.prompts} prompts\n"
        )
    elif caps:
        print(
            f"\nkeys capped at {', '.join(str(n) for n in CAPS)} requests in flight, no rate "
            f"limit, {args.latency * 1000:g} ms latency: at most {total:g} requests/s in all "
            f"(the 'sum of limits'), {args.prompts} prompts\n"
        )
    else:
        print(
            f"\nkeys limited to {', '.join(f'{r:g}' for r in LIMITS_RPS)} requests/s (sum "
            f"{total:g}/s), {args.latency * 1000:g} ms latency, {args.prompts} prompts; "
            f"limits enforced as {' and '.join(modes)} (sliding: 1 s windows)\n"
        )
    print(table.render())
    ok = True
    for mode, retry in itertools.product(modes, retries):
        runs = [f for f in results if f["limits"] == mode and f["retry_after"] == retry]
        sq = next((f for f in runs if f["name"] == "squall"), None)
        label = mode if retry == "seconds" else f"{mode}, no Retry-After"
        for f in runs:
            if f is not sq and f["rate"] and sq is not None and sq["rate"]:
                ratio = fmt(sq["rate"] / f["rate"])
                print(f"{label}: squall's rate / {f['name']}'s rate: {ratio}x")
        if sq is not None and not caps and not open_:
            met = target_met(sq, total, args.prompts, label)
            # The target (issue 2) is for buckets with Retry-After.
            ok = ok and (met or mode != "bucket" or retry != "seconds")
    name = {"caps": "pool-caps", "open": "pool-open"}.get(args.scenario, "pool")
    path = save_report(name, {"args": vars(args), "results": results})
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
