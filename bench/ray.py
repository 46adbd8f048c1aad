"""bench/ray: squall on a Ray cluster (`--ray`), its scaling and its pooled rate, beside Ray Data.

One command, loopback only, bounded (every child has a timeout). It starts a one-node Ray
cluster of its own (`ray start --head --block` in a process group of its own, a temp dir of its
own; stopped by SIGTERM to that process, never by `ray stop`, which kills every Ray process of
the machine), then:

    scaling   requests/s against an unlimited zero-latency endpoint (`bench/leanserver.py`):
              the local engine (no Ray), then `--ray` with 1, 2 and 4 workers. The rate is the
              steady part (the journal's done times from the 10th to the 90th percentile of
              rows, so Ray's start is not counted); the CPU of every worker process, of the
              coordinator and of the driver is sampled over the same window (psutil, every
              0.25 s), which gives the CPU per request of each, and from it what a cluster of
              N nodes would reach.
    limits    the pooled rate under shared limits: three keys of 20, 10 and 5 requests/s (rpm
              declared), the simulator enforcing strict one-second sliding windows, 50 ms
              latency, `--ray` with 3 workers: the ledger's rate from the 10th to the last
              answer as a fraction of the sum of the limits, 429s, rows lost.
    raydata   Ray Data's `ray.data.llm.HttpRequestProcessorConfig` on the same cluster, given
              the keys' total (35) as `qps`. It takes one URL and one header set, so one key:
              `raydata` gets one simulator key allowed the whole 35/s (the most favourable
              reading), `raydata-1key` the fastest of the three real keys (20/s: what a user
              with these three keys could give it). concurrency 3 (as the 3 workers),
              batch_size 64, max_retries 3 (the default, 0, fails the job at the first 429).

The cluster declares more logical CPUs than the machine has (`--num-cpus 6`, so 4 workers of 1
CPU each fit): on a 2-core machine the scaling figure is bounded by the cores, so read the
per-request CPU, not the 4-worker rate. Figures go to bench/out/ray.json.

Run: python bench/ray.py [--parts scaling,limits,raydata] [--workers 1,2,4]
     [--rows-open 4000] [--rows-limited 600]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named ray.py: with bench/ first on sys.path, `import ray` (here, in squall, in
# Ray itself) would import this file. Put bench/ last, so `import common` still works.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.append(str(_BENCH))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from common import (  # noqa: E402  # bench/ is not a package
    OUT,
    ROOT,
    Table,
    fmt,
    header,
    last_json,
    save_report,
    start_lean_server,
    start_simulator,
    verdict,
)

LIMITS_RPS = (20.0, 10.0, 5.0)
# The last four characters differ, so the masked keys in the ledger tell them apart.
KEYS = tuple(f"sk-bench-ray-{int(r)}rps-{c * 4}" for r, c in zip(LIMITS_RPS, "abc", strict=True))
TOTAL_KEY = "sk-bench-ray-total-dddd"
CHILD_TIMEOUT_S = 240.0


def prompt(i: int) -> str:
    """Return row `i`'s prompt (unique, with a known answer at the simulator)."""
    return f"ray bench row {i}: what is {i} + {i % 7} x 3?"


# ---------------------------------------------------------------------------------------------
# The cluster


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment of Ray's processes and of the contenders: this tree's squall first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


class Cluster:
    """A one-node Ray cluster in a process group of its own (see the module docstring)."""

    def __init__(self, cpus: int) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="sqrb-", dir="/tmp"))
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        ray_bin = str(Path(sys.executable).with_name("ray"))
        args = [
            ray_bin,
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            str(cpus),
            "--include-dashboard=false",
            "--dashboard-port",
            str(_free_port()),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--disable-usage-stats",
            "--node-ip-address",
            "127.0.0.1",
            "--object-store-memory",
            str(300 * 1024 * 1024),
            "--temp-dir",
            str(self.temp_dir),
            "--block",
        ]
        self.log = self.temp_dir / "head.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start did not come up: see {self.log}")
            time.sleep(0.2)

    def processes(self) -> list[Any]:
        """Return the cluster's processes (every descendant of `ray start`) as psutil objects."""
        import psutil

        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        return []

    def stop(self) -> None:
        """SIGTERM `ray start --block` (it stops what it started), then SIGKILL the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class CpuSampler:
    """Samples the CPU time of the cluster's processes and of one child, by role, every 0.25 s.

    Roles: "worker" (`ray::Worker...` processes), "coordinator", "driver" (the child) and
    "ray" (raylet, GCS, idle workers: everything else in the cluster's group).
    """

    def __init__(self, cluster: Cluster | None, child_pid: int) -> None:
        self._cluster = cluster
        self._child = child_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._seen: dict[int, float] = {}
        self._totals: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _role(self, p: Any) -> str:
        if p.pid == self._child:
            return "driver"
        title = " ".join(p.cmdline()[:1])
        if title.startswith("ray::Worker"):
            return "worker"
        if title.startswith("ray::Coordinator"):
            return "coordinator"
        return "ray"

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            procs = self._cluster.processes() if self._cluster is not None else []
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(self._child))
            for p in procs:
                with contextlib.suppress(psutil.Error, OSError):
                    t = p.cpu_times()
                    cpu = t.user + t.system
                    # Each slice of CPU goes to the role the process has now: an idle Ray
                    # worker's start counts as Ray's, its work as an actor as the worker's.
                    self._totals[self._role(p)] = (
                        self._totals.get(self._role(p), 0.0) + cpu - self._seen.get(p.pid, 0.0)
                    )
                    self._seen[p.pid] = cpu
            totals = dict(self._totals)
            self.samples.append((time.time(), totals))
            self._stop.wait(0.25)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """Return each role's CPU seconds between wall times `t0` and `t1` (nearest samples)."""
        if not self.samples:
            return {}
        a = min(self.samples, key=lambda s: abs(s[0] - t0))
        b = min(self.samples, key=lambda s: abs(s[0] - t1))
        span = b[0] - a[0]
        if span <= 0:
            return {}
        scale = (t1 - t0) / span  # the samples' window is within 0.25 s of the asked one
        return {r: (b[1].get(r, 0.0) - a[1].get(r, 0.0)) * scale for r in b[1]}


def run_child(job: dict[str, Any], cluster: Cluster | None) -> tuple[dict[str, Any], CpuSampler]:
    """Run one contender (`python bench/ray.py --child`) with `job` on stdin; sample its CPU."""
    OUT.mkdir(parents=True, exist_ok=True)
    err = OUT / f"ray-{job['tag']}.stderr.log"
    with err.open("w") as errf:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errf,
            text=True,
            env=child_env(),
        )
    sampler = CpuSampler(cluster, proc.pid)
    try:
        out, _ = proc.communicate(json.dumps(job), timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
        out += "\n" + json.dumps({"error": f"killed after {CHILD_TIMEOUT_S:g} s"})
    finally:
        sampler.stop()
    report = last_json(out)
    report["rc"] = proc.returncode
    if proc.returncode != 0 and "error" not in report:
        report["error"] = err.read_text(errors="replace")[-400:].strip().replace("\n", " | ")
    return report, sampler


# ---------------------------------------------------------------------------------------------
# The contenders, in a child process each


def child_squall(job: dict[str, Any]) -> dict[str, Any]:
    """squall.run() locally or on Ray; return counts and the done times' steady window."""
    import squall
    from squall.records import RowState

    keys = tuple(
        squall.KeyConfig(
            key=k["key"], rpm=float("inf") if k["rps"] is None else 60.0 * float(k["rps"])
        )
        for k in job["keys"]
    )
    cfg = squall.RunConfig(
        model="sim-model",
        endpoints=(squall.EndpointConfig(name="bench", base_url=job["base_url"], keys=keys),),
        progress="off",
        ray=job.get("ray"),
        workers=job.get("workers"),
    )
    journal = Path(job["journal"])
    for p in journal.parent.glob(journal.name + "*"):
        p.unlink()
    prompts = [prompt(i) for i in range(job["rows"])]
    t0 = time.time()
    res = squall.run(prompts, output=job["output"], config=cfg, journal=journal)
    wall = time.time() - t0
    with sqlite3.connect(journal) as db:
        done_at = sorted(
            t
            for (t,) in db.execute(
                "SELECT updated_at FROM rows WHERE state = ?", (int(RowState.DONE),)
            )
        )
    answers = [r.get("response") for r in res.rows()]
    from squall.simulator import expected_answer

    correct = sum(
        1
        for i, a in enumerate(answers)
        if a is not None and (job.get("lean") or a == expected_answer(prompts[i]))
    )
    n = len(done_at)
    lo, hi = (done_at[n // 10], done_at[(9 * n) // 10]) if n >= 20 else (t0, t0 + wall)
    steady_rows = (9 * n) // 10 - n // 10
    return {
        "done": res.summary.done,
        "failed": res.summary.failed,
        "correct": correct,
        "status": res.summary.status,
        "wall_s": wall,
        "steady_t0": lo,
        "steady_t1": hi,
        "steady_rows": steady_rows,
        "steady_rate": steady_rows / (hi - lo) if hi > lo else None,
        "rate_limited": sum(k.rate_limited for k in res.summary.keys),
    }


def child_raydata(job: dict[str, Any]) -> dict[str, Any]:
    """Ray Data's HttpRequestProcessorConfig over the same rows; return what came back."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    import ray
    from squall.simulator import expected_answer

    ray.init(address=job["ray"], log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    config = HttpRequestProcessorConfig(
        url=job["base_url"].rstrip("/") + "/chat/completions",
        headers={"Authorization": f"Bearer {job['keys'][0]['key']}"},
        qps=int(job["qps"]),
        concurrency=int(job["concurrency"]),
        batch_size=int(job["batch_size"]),
        max_retries=int(job["max_retries"]),
    )
    processor = build_processor(
        config,
        preprocess=lambda row: {
            "payload": {
                "model": "sim-model",
                "messages": [{"role": "user", "content": row["prompt"]}],
            },
            "prompt": row["prompt"],
        },
        postprocess=lambda row: {
            "prompt": row["prompt"],
            "answer": row["http_response"]["choices"][0]["message"]["content"],
        },
    )
    rows = [{"prompt": prompt(i)} for i in range(job["rows"])]
    t0 = time.time()
    error = None
    got: list[dict[str, Any]] = []
    try:
        got = processor(ray.data.from_items(rows)).take_all()
    except Exception as exc:  # the job failed: what did it keep?
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    wall = time.time() - t0
    correct = sum(1 for r in got if r["answer"] == expected_answer(r["prompt"]))
    return {"done": len(got), "correct": correct, "wall_s": wall, "error": error}


def child_main() -> int:
    """Run the contender the job on stdin names; print its report as one JSON line."""
    job = json.loads(sys.stdin.read())
    try:
        rep = child_raydata(job) if job["contender"] == "raydata" else child_squall(job)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        rep = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(rep))
    return 0


# ---------------------------------------------------------------------------------------------
# The parts


def ledger_figures(path: Path, rows: int) -> dict[str, Any]:
    """Return the ledger's requests, 429s, distinct rows answered and its steady rate."""
    from squall.testing import read_ledger_file

    entries = [e for e in read_ledger_file(path) if e.event == "request"]
    served = sorted(e.t for e in entries if e.served)
    steady = served[9:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None
    return {
        "requests": len(entries),
        "rate_limited": sum(1 for e in entries if e.status == 429),
        "served": len(served),
        "rows_answered": len({e.prompt_sha256 for e in entries if e.served}),
        "steady_rate": rate,
        "rows": rows,
    }


def part_scaling(cluster: Cluster, workers: list[int], rows: int) -> list[dict[str, Any]]:
    """The local engine and `--ray` with each worker count, against the lean server."""
    results = []
    with start_lean_server() as server:
        for n in [0, *workers]:
            name = "local" if n == 0 else f"ray-{n}"
            job = {
                "contender": "squall",
                "tag": f"scaling-{name}",
                "base_url": server.base_url,
                "keys": [{"key": "sk-bench-ray-lean-eeee", "rps": None}],
                "rows": rows,
                "lean": True,
                "journal": str(OUT / f"ray-scaling-{name}.sqlite"),
                "output": str(OUT / f"ray-scaling-{name}.jsonl"),
                "ray": cluster.address if n else None,
                "workers": n or None,
            }
            rep, sampler = run_child(job, cluster if n else None)
            cpu: dict[str, float] = {}
            if rep.get("steady_t0") is not None:
                cpu = sampler.between(rep["steady_t0"], rep["steady_t1"])
            steady_rows = rep.get("steady_rows") or 0
            per_req = {
                r: 1000.0 * c / steady_rows for r, c in cpu.items() if steady_rows and c >= 0
            }
            rep.update(name=name, workers=n, cpu_s=cpu, cpu_ms_per_request=per_req)
            results.append(rep)
            print(
                f"  {name}: {rep.get('done')}/{rows} done, steady {fmt(rep.get('steady_rate'), 1)}"
                f" rows/s, CPU ms/request { ({k: round(v, 2) for k, v in per_req.items()}) }"
                + (f", error {rep['error']}" if rep.get("error") else ""),
                flush=True,
            )
    return results


def sim_config(keys: list[tuple[str, float]]) -> Any:
    """The simulator: these keys as strict one-second sliding windows, 50 ms latency."""
    from squall.simulator import SimConfig, SimKey

    return SimConfig(
        keys=tuple(
            SimKey(key=k, rpm=60.0 * r, limit_mode="sliding", window_s=1.0) for k, r in keys
        ),
        latency_s=0.05,
        latency_jitter_s=0.02,
        seed=1,
    )


def part_limits(cluster: Cluster, rows: int, parts: set[str]) -> list[dict[str, Any]]:
    """squall (`--ray`, 3 workers) and Ray Data under the same total of shared limits."""
    total = sum(LIMITS_RPS)
    runs: list[tuple[str, list[tuple[str, float]], dict[str, Any]]] = []
    if "limits" in parts:
        keys = list(zip(KEYS, LIMITS_RPS, strict=True))
        runs.append(("squall-ray-3", keys, {"contender": "squall", "workers": 3}))
    if "raydata" in parts:
        common = {"contender": "raydata", "qps": total, "concurrency": 3, "batch_size": 64}
        common["max_retries"] = 3
        runs.append(("raydata", [(TOTAL_KEY, total)], dict(common)))
        runs.append(("raydata-1key", [(KEYS[0], LIMITS_RPS[0])], dict(common)))
    results = []
    for name, keys, extra in runs:
        ledger = OUT / f"ray-{name}.ledger.jsonl"
        with start_simulator(sim_config(keys), ledger) as server:
            job = {
                "tag": name,
                "base_url": server.base_url,
                "keys": [{"key": k, "rps": r} for k, r in keys],
                "rows": rows,
                "journal": str(OUT / f"ray-{name}.sqlite"),
                "output": str(OUT / f"ray-{name}.jsonl"),
                "ray": cluster.address,
                **extra,
            }
            rep, _ = run_child(job, None)
        led = ledger_figures(ledger, rows)
        rate = led["steady_rate"]
        rep.update(
            name=name,
            ledger=led,
            x_sum=rate / total if rate else None,
            lost=rows - int(rep.get("correct") or 0),
            pct_429=100.0 * led["rate_limited"] / led["requests"] if led["requests"] else None,
        )
        results.append(rep)
        print(
            f"  {name}: {rep.get('correct')}/{rows} correct, {fmt(rep['x_sum'])} of the sum, "
            f"{led['rate_limited']} 429s" + (f", error {rep['error']}" if rep.get("error") else ""),
            flush=True,
        )
    return results


def main(argv: list[str]) -> int:
    """Run the parts asked for; print the tables; write bench/out/ray.json."""
    if "--child" in argv:
        return child_main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="scaling,limits,raydata")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rows-open", type=int, default=4000)
    ap.add_argument("--rows-limited", type=int, default=600)
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    workers = [int(w) for w in args.workers.split(",")]
    print(header("bench/ray", [__file__, *argv]), flush=True)
    try:
        import ray.data.llm  # noqa: F401
    except ImportError as exc:
        if "raydata" in parts:
            print(f"raydata: cannot run here: {exc}")
            parts.discard("raydata")
    started = time.monotonic()
    cpus = max([*workers, 3]) + 2  # logical: 4 workers of 1 CPU, and Ray Data's tasks
    cluster = Cluster(cpus=cpus)
    report: dict[str, Any] = {"machine_cores": os.cpu_count(), "cluster_cpus": cpus}
    try:
        if "scaling" in parts:
            print("scaling (unlimited zero-latency endpoint):", flush=True)
            report["scaling"] = part_scaling(cluster, workers, args.rows_open)
        if parts & {"limits", "raydata"}:
            print("shared limits (20, 10, 5 requests/s, sliding one-second windows):", flush=True)
            report["limits"] = part_limits(cluster, args.rows_limited, parts)
    finally:
        cluster.stop()
    report["wall_s"] = time.monotonic() - started
    print()
    if "scaling" in report:
        t = Table(["contender", "rows", "steady rows/s", "x local", "CPU ms/req: workers",
                   "coordinator", "driver", "ray (raylet, GCS)", "wall s"])  # fmt: skip
        local = next((r for r in report["scaling"] if r["workers"] == 0), None)
        base = local.get("steady_rate") if local else None
        for r in report["scaling"]:
            per = r.get("cpu_ms_per_request", {})
            rate = r.get("steady_rate")
            t.add(
                r["name"],
                f"{r.get('done')}/{args.rows_open}",
                fmt(rate, 1),
                fmt(rate / base if rate and base else None),
                fmt(per.get("worker")) if r["workers"] else "-",
                fmt(per.get("coordinator")) if r["workers"] else "-",
                fmt(per.get("driver")),
                fmt(per.get("ray")) if r["workers"] else "-",
                fmt(r.get("wall_s"), 1),
            )
        print(t.render())
        print()
        report["projection"] = projection(report["scaling"])
        for line in report["projection"]["lines"]:
            print(line)
        print()
    if "limits" in report:
        t = Table(["contender", "rows correct", "x sum of limits", "requests", "429s", "429 %",
                   "rows lost", "wall s", "outcome"])  # fmt: skip
        for r in report["limits"]:
            led = r["ledger"]
            t.add(
                r["name"],
                f"{r.get('correct')}/{led['rows']}",
                fmt(r["x_sum"]),
                led["requests"],
                led["rate_limited"],
                fmt(r["pct_429"]),
                r["lost"],
                fmt(r.get("wall_s"), 1),
                r.get("error") or "completed",
            )
        print(t.render())
    missed = 0
    for r in report.get("limits", []):
        if r["name"].startswith("squall"):
            ok = (r["x_sum"] or 0) >= 0.9 and (r["pct_429"] or 0) < 1.0 and r["lost"] == 0
            missed += not ok
            print(
                f"\ntarget (squall under shared limits: >= 0.9 of the sum, < 1% 429s, 0 rows "
                f"lost): {verdict(ok)}"
            )
    path = save_report("ray", report)
    print(f"\nfigures: {path.relative_to(ROOT)}; {report['wall_s']:.0f} s in all")
    return missed


def projection(scaling: list[dict[str, Any]]) -> dict[str, Any]:
    """What N nodes would reach, from the CPU per request of the worker, coordinator, driver.

    Workers scale out (one per core); the driver (it journals every answer) and the
    coordinator (every slot) are one process each, so each caps the run at 1 / its CPU per
    request.
    """
    rays = [r for r in scaling if r["workers"] and r.get("cpu_ms_per_request")]
    if not rays:
        return {"lines": ["(no Ray run to project from)"]}
    # A run with no more workers than cores: with more, they share cores and each one's CPU
    # per request grows with the contention, which a cluster of N nodes would not have.
    fits = [r for r in rays if r["workers"] <= (os.cpu_count() or 1)] or rays
    best = max(fits, key=lambda r: r["workers"])
    per = best["cpu_ms_per_request"]
    w, c, d = (per.get(k) for k in ("worker", "coordinator", "driver"))
    lines = [
        f"per request ({best['name']}): worker {fmt(w)} ms CPU, coordinator {fmt(c)} ms, "
        f"driver {fmt(d)} ms, Ray's own processes {fmt(per.get('ray'))} ms"
    ]
    caps = {}
    if w:
        caps["one worker per core"] = 1000.0 / w
    if c:
        caps["coordinator (one process)"] = 1000.0 / c
    if d:
        caps["driver (one process)"] = 1000.0 / d
    for name, cap in caps.items():
        lines.append(f"  {name}: {cap:,.0f} requests/s")
    nodes = {}
    if w:
        ceiling = min(v for k, v in caps.items() if k != "one worker per core")
        for n in (1, 2, 4, 8, 16):
            cores = 2 * n
            nodes[n] = min(cores * caps["one worker per core"], ceiling)
        lines.append(
            "  N nodes of 2 cores (one worker per core, driver and coordinator elsewhere): "
            + ", ".join(f"{n}: {v:,.0f}/s" for n, v in nodes.items())
        )
    return {"per_request_ms": per, "caps": caps, "nodes": nodes, "lines": lines}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
