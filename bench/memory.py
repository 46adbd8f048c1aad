"""bench/memory: squall's peak memory stays flat as the input grows.

Short rows (generated once into bench/out/, reused) run against a zero-latency server
(`bench/leanserver.py`, its own process), one unlimited key, concurrency 64, at each size in
`--rows`: squall.run() (journal on, output written) beside the bare aiohttp loop reading the
same file streaming. Peak RSS is the child process's own (`ru_maxrss` from `os.wait4`), the
interpreter and its imports included.

Targets (issue 2): squall's peak RSS at the largest size < 150 MB and within 1.2x of its
peak at the smallest size.

Run: python bench/memory.py [--rows 100000,1000000] [--contenders squall,bare]
(1,000,000 rows take many minutes on a small machine: ~6-15 min per contender on 2 cores.)
"""

from __future__ import annotations

import argparse
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
    start_lean_server,
    verdict,
    write_prompts,
)

KEY = "sk-bench-memory-00000001"


def run_size(name: str, base_url: str, n: int, timeout_s: float) -> dict[str, Any]:
    """Run contender `name` over `n` rows; return its peak RSS and counts."""
    rows = write_prompts(OUT / f"memory-{n}.jsonl", n)
    tag = f"memory-{name}-{n}"
    journal = OUT / f"{tag}.sqlite"
    for p in OUT.glob(f"{tag}.sqlite*"):
        p.unlink()
    output = OUT / f"{tag}.out.jsonl"
    job = {
        "base_url": base_url,
        "keys": [{"key": KEY, "rps": None}],
        "input": str(rows),
        "output": str(output),
        "journal": str(journal),
        "concurrency": 64,
        "model": "lean-model",
    }
    res = run_client(name, job, timeout_s=timeout_s)
    figures = {
        "name": name,
        "rows": n,
        "rc": res.rc,
        "killed": res.killed,
        "done": res.report.get("done"),
        "error": res.report.get("error"),
        "wall_s": res.report.get("wall_s"),
        "peak_rss_mb": res.maxrss_mb,
        "journal_mb": journal.stat().st_size / 2**20 if journal.exists() else None,
        "command": res.command,
        "cpu_pressure_pct": res.cpu_pressure_pct,
    }
    # The outputs of a million rows are large: keep the figures, not the files.
    output.unlink(missing_ok=True)
    for p in OUT.glob(f"{tag}.sqlite*"):
        p.unlink()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; return 0 when squall meets both targets."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    ap.add_argument("--contenders", default="squall,bare")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    args = ap.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.rows.split(",") if s.strip())
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]

    print(header("bench/memory", sys.argv))
    results: list[dict[str, Any]] = []
    with start_lean_server() as server:
        for n in sizes:
            for name in names:
                f = run_size(name, server.base_url, n, args.timeout)
                results.append(f)
                print(
                    f"  {name:<7} {n:>9,} rows: peak RSS {fmt(f['peak_rss_mb'], 1)} MB, "
                    f"{f['done']} done in {fmt(f['wall_s'], 1)} s"
                    + (f"  ERROR {f['error']}" if f["error"] or f["rc"] else ""),
                    flush=True,
                )

    def peak(name: str, n: int) -> float | None:
        return next(
            (f["peak_rss_mb"] for f in results if f["name"] == name and f["rows"] == n), None
        )

    table = Table(
        [
            "contender",
            "rows",
            "rows done",
            "wall s",
            "peak RSS MB",
            "x its smallest run",
            "x bare at this size",
            "journal MB",
        ]
    )
    for f in results:
        small = peak(f["name"], sizes[0])
        bare = peak("bare", f["rows"])
        table.add(
            f["name"],
            f"{f['rows']:,}",
            f"{f['done'] or 0:,}",
            fmt(f["wall_s"], 1),
            fmt(f["peak_rss_mb"], 1),
            fmt(f["peak_rss_mb"] / small if small else None),
            fmt(f["peak_rss_mb"] / bare if bare else None),
            fmt(f["journal_mb"], 1),
        )
    print("\nshort rows, zero-latency server, one unlimited key, concurrency 64\n")
    print(table.render())
    ok = True
    big, small = peak("squall", sizes[-1]), peak("squall", sizes[0])
    if big is not None and small is not None:
        ok = big < 150 and big <= 1.2 * small
        print(
            f"\ntarget < 150 MB at {sizes[-1]:,} rows: {fmt(big, 1)} MB -> {verdict(big < 150)}\n"
            f"target within 1.2x of the {sizes[0]:,}-row run: {fmt(big / small)}x -> "
            f"{verdict(big <= 1.2 * small)}"
        )
    path = save_report("memory", {"args": vars(args), "results": results})
    print(f"\nfigures: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
