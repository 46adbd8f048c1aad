"""bench/litellm: discovering an undeclared limit behind a real LiteLLM proxy (issue 11).

Many relays are built on LiteLLM. Its proxy drops the upstream's `Retry-After` and answers a
429 with its own body (`"type": "throttling_error", "code": "429"`), so a client that discovers
a key's limit gets no hint of when to come back. This benchmark puts a LiteLLM proxy (its own
process, 127.0.0.1 only, no database, no retries, no cooldowns, no callbacks, telemetry off,
the local model-cost map) in front of squall's provider simulator (its own process: one key
limited to 20 requests/s, 50 ms latency) and runs squall through it with no limit declared
(`rps: "discover"`, concurrency 64). As references, in the same sitting, squall runs straight
against the simulator with its 429s carrying `Retry-After` and carrying none. Each run gets a
fresh simulator (full buckets) and, behind the proxy, a fresh proxy.

The figures come from the simulator's ledger (every request it saw, with its time):

    first 429 s       seconds from the run's first request to its first 429
    after 429 /s      answers per second from the first 429 to the last answer
    to 0.9 s          seconds from the first 429 until some 2 s window first holds
                      >= 0.9 x the limit in answers (windows slide in 0.1 s steps)
    from +10 s /s     answers per second from 10 s after the first 429 to the last answer:
                      whether it stayed there, not just touched it
    slow s after      whole seconds after the first 429's second (the last, partial one left
                      out) that answered < 0.9 x the limit: how long it ran below
    longest pause s   the longest time the simulator saw no request at all
    x limit           answers per second over the whole run (first request to last answer)
                      / the limit

`proxy-unlimited` measures the proxy itself: the key has no limit and squall declares
`rpm = inf` (400 prompts), so its rate is the most this proxy passes on this machine; a
discovering run behind the proxy cannot beat it.

Target (issue 11): "an undeclared limit reached to >= 0.9 within 10 s of the first 429, with
or without Retry-After", read as: some 2 s window holds >= 0.9 x the limit within 10 s of the
first 429, and the rate from 10 s after it to the end is >= 0.9 x the limit. The exit status
is 0 when every proxy run (one per `--limits` mode) meets it; the direct runs are references.

LiteLLM is run from its own interpreter (`--litellm-python`, default `.venv/bin/python` in the
repository root, else this one): `litellm[proxy]<1.100` pins openai, rich and python-dateutil
below what squall's dev environment uses, so keep it out of that one:

    python -m venv .venv && .venv/bin/pip install -e ".[bench-litellm]"   # or just litellm

Run: python bench/litellm.py [--prompts 1200] [--limit 20] [--latency 0.05]
     [--limits bucket|sliding|both]
     [--contenders proxy,direct,direct-no-retry-after] [--litellm-python PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    OUT,
    ROOT,
    Server,
    Table,
    fmt,
    header,
    run_client,
    save_report,
    start_simulator,
    verdict,
    write_prompts,
)

LIMIT_RPS = 20.0
KEY = "sk-bench-litellm-key-llll"
MASTER_KEY = "sk-bench-litellm-master-mmmm"
MODEL = "sim-model"
WINDOW_S = 2.0
TARGET_FRACTION = 0.9
TARGET_S = 10.0
CONTENDERS = ("proxy", "direct", "direct-no-retry-after", "proxy-unlimited")
UNLIMITED_PROMPTS = 400

# LiteLLM must not reach the network: no telemetry, the bundled model-cost map, no database,
# no callbacks; proxies cleared so even a stray request could only go to loopback.
LITELLM_ENV = {
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "DISABLE_SCHEMA_UPDATE": "True",
    "USE_PRISMA_MIGRATE": "False",
    "NO_PROXY": "*",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
LITELLM_ENV_DROP = (
    "DATABASE_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "REDIS_HOST",
    "REDIS_URL",
)


# ---------------------------------------------------------------------------------------------
# The LiteLLM proxy


def litellm_python(given: str | None) -> str:
    """Return the interpreter that runs LiteLLM: `given`, else `.venv/bin/python`, else ours."""
    if given:
        return given
    local = ROOT / ".venv" / "bin" / "python"
    return str(local) if local.exists() else sys.executable


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proxy_config(sim_url: str) -> str:
    """Return the proxy's config (YAML is a superset of JSON): one model routed to the
    simulator as an OpenAI-compatible provider, nothing retried, nothing cooled down."""
    cfg = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": sim_url,
                    "api_key": KEY,
                    "max_retries": 0,
                    "num_retries": 0,
                    "timeout": 60,
                },
            }
        ],
        "litellm_settings": {
            "num_retries": 0,
            "request_timeout": 60,
            "telemetry": False,
            "drop_params": True,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "router_settings": {
            "num_retries": 0,
            "retry_after": 0,
            "disable_cooldowns": True,
            "allowed_fails": 1_000_000,
        },
        "general_settings": {
            "master_key": MASTER_KEY,
            "disable_spend_logs": True,
            "disable_reset_budget": True,
        },
    }
    return json.dumps(cfg, indent=2)


def start_litellm(sim_url: str, python: str, tag: str, timeout_s: float = 180.0) -> Server:
    """Start a LiteLLM proxy in front of `sim_url` on 127.0.0.1; wait until it answers."""
    cfg_path = OUT / f"{tag}.litellm.yaml"
    cfg_path.write_text(proxy_config(sim_url), encoding="utf-8")
    log = OUT / f"{tag}.litellm.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in LITELLM_ENV_DROP}
    env.update(LITELLM_ENV)
    env.pop("PYTHONPATH", None)  # LiteLLM's own interpreter and packages, nothing of squall's
    cmd = [
        python,
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(cfg_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
        )
    base = f"http://127.0.0.1:{port}"
    server = Server(proc, base + "/v1")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            req = urllib.request.Request(
                base + "/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}
            )
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    server.stop()
    tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
    raise RuntimeError(
        f"the LiteLLM proxy did not answer /v1/models within {timeout_s:g} s "
        f"(rc {proc.returncode}); `{' '.join(cmd)}`; log {log}:\n{tail}"
    )


def probe_429(base_url: str, key: str, n: int = 40) -> dict[str, Any] | None:
    """Send `n` requests at once-ish; return the status, headers and body of the first 429."""
    import concurrent.futures

    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "probe"}]})

    def one(_: int) -> dict[str, Any] | None:
        req = urllib.request.Request(
            base_url.rstrip("/") + "/chat/completions",
            data=body.encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30):
                return None
        except urllib.error.HTTPError as e:
            if e.code != 429:
                return None
            return {
                "status": e.code,
                "headers": {k.lower(): v for k, v in e.headers.items()},
                "body": e.read().decode("utf-8", "replace")[:600],
            }

    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        for r in ex.map(one, range(n)):
            if r is not None:
                return r
    return None


# ---------------------------------------------------------------------------------------------
# What the ledger says


def ledger_figures(path: Path, limit: float, until: float | None = None) -> dict[str, Any]:
    """Return the timing figures of one run from the simulator's ledger (see the docstring),
    leaving out what came after `until` (a time.monotonic(): the ledger's clock)."""
    from squall.testing import read_ledger_file

    entries = sorted(read_ledger_file(path), key=lambda e: e.t)
    if until is not None:
        entries = [e for e in entries if e.t <= until]
    if not entries:
        return {"requests": 0, "rate_limited": 0, "served": 0}
    t0 = entries[0].t
    served = [e.t - t0 for e in entries if e.served]
    limited = [e.t - t0 for e in entries if e.status == 429]
    end = served[-1] if served else 0.0
    per_s = [0] * (int(end) + 1)
    for t in served:
        per_s[int(t)] += 1
    per_s_429 = [0] * (int(max(limited, default=0.0)) + 1)
    for t in limited:
        per_s_429[int(t)] += 1
    fig: dict[str, Any] = {
        "requests": len(entries),
        "rate_limited": len(limited),
        "served": len(served),
        "span_s": end,
        "x_limit": (len(served) / end / limit) if end > 0 else None,
        "served_per_s": per_s,
        "429_per_s": per_s_429,
        "first_429_s": None,
        "rate_after_429": None,
        "to_target_s": None,
        "slow_s_after_429": None,
        "rate_from_10s": None,
        "longest_pause_s": max((b.t - a.t for a, b in itertools.pairwise(entries)), default=None),
    }
    if not limited:
        return fig
    first = limited[0]
    fig["first_429_s"] = first
    after = [t for t in served if t >= first]
    if end > first:
        fig["rate_after_429"] = len(after) / (end - first)
    need = TARGET_FRACTION * limit * WINDOW_S
    start = first
    while start + WINDOW_S <= end + 1e-9:
        n = sum(1 for t in served if start <= t < start + WINDOW_S)
        if n >= need:
            fig["to_target_s"] = start + WINDOW_S - first
            break
        start += 0.1
    late = [t for t in served if t >= first + TARGET_S]
    if end - first - TARGET_S >= 2.0:
        fig["rate_from_10s"] = len(late) / (end - first - TARGET_S)
    full = per_s[int(first) + 1 : -1]
    fig["slow_s_after_429"] = sum(1 for n in full if n < TARGET_FRACTION * limit)
    return fig


# ---------------------------------------------------------------------------------------------
# One run


def run_one(
    contender: str,
    limits: str,
    prompts: Path,
    latency: float,
    python: str,
    timeout_s: float,
    limit: float = LIMIT_RPS,
) -> dict[str, Any]:
    """Run squall (discovering) against a fresh simulator, through a fresh proxy or straight."""
    from squall.testing import SimConfig, SimKey

    retry = "none" if contender == "direct-no-retry-after" else "seconds"
    unlimited = contender == "proxy-unlimited"
    sim = SimConfig(
        keys=(
            SimKey(key=KEY, limit_mode=limits)
            if unlimited
            else SimKey(key=KEY, rpm=limit * 60.0, limit_mode=limits, window_s=1.0),
        ),
        latency_s=latency,
        retry_after=retry,
        seed=1,
    )
    tag = f"litellm-{limits}-{contender}"
    ledger = OUT / f"{tag}.ledger.jsonl"
    for p in OUT.glob(f"{tag}.sqlite*"):
        p.unlink()
    figures: dict[str, Any] = {
        "contender": contender,
        "limits": limits,
        "retry_after": retry,
        "limit_rps": limit,
        "prompts": UNLIMITED_PROMPTS if unlimited else sum(1 for _ in prompts.open()),
    }
    with start_simulator(sim, ledger) as simulator:
        proxy: Server | None = None
        try:
            base_url, key = simulator.base_url, KEY
            if contender.startswith("proxy"):
                started = time.monotonic()
                proxy = start_litellm(simulator.base_url, python, tag)
                figures["proxy_start_s"] = time.monotonic() - started
                base_url, key = proxy.base_url, MASTER_KEY
            job = {
                "base_url": base_url,
                "keys": [{"key": key, "rps": None if unlimited else "discover"}],
                "input": str(prompts),
                "output": str(OUT / f"{tag}.jsonl"),
                "journal": str(OUT / f"{tag}.sqlite"),
                "concurrency": 64,
                "model": MODEL,
            }
            if unlimited:
                job["input"] = str(
                    write_prompts(OUT / "litellm-unlimited.jsonl", UNLIMITED_PROMPTS)
                )
            res = run_client("squall", job, timeout_s=timeout_s)
            ended = time.monotonic()
            if contender == "proxy":
                # After the run (the ledger's figures are cut at the run's last answer): what a
                # 429 looks like once it has come through the proxy.
                time.sleep(1.5)
                figures["proxy_429"] = probe_429(base_url, key)
        finally:
            if proxy is not None:
                proxy.stop()
    rep = res.report
    figures.update(
        {
            "rc": res.rc,
            "done": int(rep.get("done", 0) or 0),
            "wall_s": rep.get("wall_s"),
            "error": rep.get("error"),
            "report": rep,
            "cpu_pressure_pct": res.cpu_pressure_pct,
            # The probe's requests come after the run's: left out.
            "ledger": ledger_figures(ledger, limit, until=ended),
        }
    )
    return figures


def met(f: dict[str, Any]) -> bool:
    """Whether a run reached >= 0.9 of the limit within 10 s of its first 429 and held it."""
    led = f["ledger"]
    to, late = led.get("to_target_s"), led.get("rate_from_10s")
    held = late is None or late >= TARGET_FRACTION * f["limit_rps"]
    return to is not None and to <= TARGET_S and held


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table; return 0 when every proxy run meets the target."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1200, help="rows (1200: a minute at 20/s)")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--limit", type=float, default=LIMIT_RPS, help="the key's requests/s")
    ap.add_argument("--limits", choices=("bucket", "sliding", "both"), default="bucket")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--litellm-python", default=None, help="the interpreter that has litellm")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per squall run")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        ap.error(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
    modes = ["bucket", "sliding"] if args.limits == "both" else [args.limits]
    python = litellm_python(args.litellm_python)

    print(header("bench/litellm", sys.argv))
    if "proxy" in names:
        version = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )
        if version.returncode != 0:
            print(f"litellm is not importable by {python}: {version.stderr.strip()[-300:]}")
            return 2
        print(f"litellm {version.stdout.strip()} ({python})")
    prompts = write_prompts(OUT / f"litellm-{args.prompts}.jsonl", args.prompts)
    results = []
    for mode, name in itertools.product(modes, names):
        f = run_one(name, mode, prompts, args.latency, python, args.timeout, args.limit)
        results.append(f)
        led = f["ledger"]
        print(
            f"  {mode:<8} {name:<22} {f['done']} rows in {fmt(f['wall_s'])} s, "
            f"{led['rate_limited']} 429s, answers per second: {led.get('served_per_s')}"
            + (f"  ENDED BY {f['error']}" if f["error"] else ""),
            flush=True,
        )

    table = Table(
        [
            "limits",
            "contender",
            "Retry-After reaches squall",
            "rows saved",
            "wall s",
            "429s",
            "first 429 s",
            "after 429 /s",
            "to 0.9 s",
            "from +10 s /s",
            "slow s after",
            "longest pause s",
            "x limit",
            "CPU pressure %",
        ]
    )
    for f in results:
        led = f["ledger"]
        reaches = "no (dropped by LiteLLM)" if f["contender"] == "proxy" else f["retry_after"]
        if f["contender"] == "proxy-unlimited":
            reaches = "- (no limit, rpm = inf)"
        table.add(
            f["limits"],
            f["contender"],
            reaches,
            f"{f['done']}/{f['prompts']}",
            fmt(f["wall_s"], 1),
            led["rate_limited"],
            fmt(led.get("first_429_s"), 1),
            fmt(led.get("rate_after_429"), 1),
            fmt(led.get("to_target_s"), 1),
            fmt(led.get("rate_from_10s"), 1),
            led.get("slow_s_after_429", "-"),
            fmt(led.get("longest_pause_s"), 1),
            fmt(led.get("x_limit")),
            fmt(f["cpu_pressure_pct"], 0),
        )
    print(
        f"\none key limited to {args.limit:g} requests/s, nothing declared (squall discovers), "
        f"concurrency 64, {args.latency * 1000:g} ms latency, {args.prompts} prompts\n"
    )
    print(table.render())
    for f in results:
        if f.get("proxy_429"):
            p = f["proxy_429"]
            ra = {k: v for k, v in p["headers"].items() if "retry" in k or "ratelimit" in k}
            print(f"\na 429 through the proxy: headers {ra or 'none about retrying'}")
            print(f"  body {p['body']}")
            break
    ok = True
    print()
    for f in results:
        if f["contender"] == "proxy-unlimited":
            rate = f["done"] / f["wall_s"] if f["wall_s"] else None
            print(f"{f['limits']}, proxy-unlimited: the proxy passes {fmt(rate, 1)} rows/s here")
            continue
        to = f["ledger"].get("to_target_s")
        first = f["ledger"].get("first_429_s")
        got = "no 429" if first is None else f"{fmt(to, 1)} s" if to is not None else "never"
        label = f"{f['limits']}, {f['contender']}"
        print(
            f"{label}: reached >= {TARGET_FRACTION:g} of the limit within {TARGET_S:g} s of the "
            f"first 429: {got}, then {fmt(f['ledger'].get('rate_from_10s'), 1)}/s from 10 s "
            f"after it -> {verdict(met(f))}"
        )
        if f["contender"] == "proxy":
            ok = ok and met(f) and f["done"] == args.prompts
    path = save_report("litellm", {"args": vars(args), "results": results})
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
