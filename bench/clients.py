"""The contenders, each run in a process of its own: `python bench/clients.py NAME < job.json`.

NAME is one of:
    squall   squall.run() with the journal on (the thing measured)
    bare     a bare aiohttp loop: semaphore + gather over bounded batches (the floor of Python)
    openai   openai.AsyncOpenAI with a semaphore, batched the same way
    seed     the seed's AsyncLLMAPI class (bench/seed_baseline.py)

The job, a JSON object on stdin:
    base_url     the endpoint, e.g. http://127.0.0.1:PORT/v1
    keys         [{"key": ..., "rps": 40 | null (unlimited) | "discover", "concurrency": 8}]
                 ("concurrency", optional, squall only: that key's max_concurrency); bare and
                 openai use the first key only
    input        a JSONL file of {"prompt": ...} rows, read streaming (the seed reads it whole)
    output       a file (squall, bare, openai) or a folder (seed)
    concurrency  requests in flight at most (per key for squall; the seed has none: its
                 chunk is its concurrency)
    journal      squall's journal file
    batch        rows per gather batch for bare and openai (default 2048)
    chunk_size   the seed's chunk (default 500)
    model        the model name to send (default sim-model)

The child prints one JSON line: done, failed, wall_s and cpu_s measured around the run only
(imports and interpreter start excluded; the parent's os.wait4 has the whole process's), its
own peak RSS, and what else the contender knows (429s, requests sent), or the error that
ended it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import traceback
from collections.abc import Callable, Coroutine
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import iter_prompts  # bench/ is not a package

Job = dict[str, Any]


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------
# squall


def run_squall(job: Job) -> dict[str, Any]:
    """Run the job through squall.run(); return its counts."""
    import squall

    keys = []
    for k in job["keys"]:
        rps = k.get("rps")
        if rps == "discover":
            rpm = None  # left out: squall finds the limit
        elif rps is None:
            rpm = float("inf")
        else:
            rpm = float(rps) * 60.0
        keys.append(
            squall.KeyConfig(
                key=k["key"],
                rpm=rpm,
                max_concurrency=int(k.get("concurrency") or job["concurrency"]),
            )
        )
    cfg = squall.RunConfig(
        model=job.get("model", "sim-model"),
        endpoints=(
            squall.EndpointConfig(
                name="bench",
                base_url=job["base_url"],
                keys=tuple(keys),
                max_concurrency=int(job["concurrency"]),
            ),
        ),
    )
    res = squall.run(
        job["input"], output=job["output"], config=cfg, journal=job["journal"], progress="off"
    )
    s = res.summary
    return {
        "done": s.done,
        "failed": s.failed,
        "requests_sent": s.requests_sent,
        "retries": s.retries,
        "status": s.status,
        "rate_limited": sum(k.rate_limited for k in s.keys),
        "keys": [
            {"label": k.label, "sent": k.sent, "ok": k.ok, "rate_limited": k.rate_limited}
            for k in s.keys
        ],
    }


# ---------------------------------------------------------------------------------------------
# The bare loop and openai: the same driver, a different request function


Send = Callable[[str], Coroutine[Any, Any, str | None]]


async def _drive(job: Job, send: Send, out: TextIO) -> dict[str, Any]:
    """Send every row through `send` under a semaphore, gathering bounded batches in order;
    write `{"id", "response"}` lines to `out` as each batch lands."""
    sem = asyncio.Semaphore(int(job["concurrency"]))
    done = failed = 0
    first_error: str | None = None

    async def one(prompt: str) -> str | None:
        async with sem:
            return await send(prompt)

    rows = iter_prompts(Path(job["input"]))
    batch_size = int(job.get("batch", 2048))
    while batch := list(islice(rows, batch_size)):
        results = await asyncio.gather(*(one(p) for _, p in batch), return_exceptions=True)
        lines = []
        for (i, _), r in zip(batch, results, strict=True):
            if isinstance(r, BaseException):
                failed += 1
                first_error = first_error or f"{type(r).__name__}: {r}"
                r = None
            else:
                done += 1
            lines.append(json.dumps({"id": i, "response": r}, ensure_ascii=False))
        out.write("\n".join(lines) + "\n")
    return {"done": done, "failed": failed, "first_error": first_error}


async def _bare(job: Job, out: TextIO) -> dict[str, Any]:
    import aiohttp

    url = job["base_url"].rstrip("/") + "/chat/completions"
    headers = {
        "Authorization": f"Bearer {job['keys'][0]['key']}",
        "Content-Type": "application/json",
    }
    model = job.get("model", "sim-model")
    connector = aiohttp.TCPConnector(limit=int(job["concurrency"]))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(prompt: str) -> str | None:
            body = json.dumps(
                {"model": model, "messages": [{"role": "user", "content": prompt}]},
                ensure_ascii=False,
            ).encode()
            async with session.post(url, data=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
            text: str | None = json.loads(raw)["choices"][0]["message"]["content"]
            return text

        return await _drive(job, send, out)


def run_bare(job: Job) -> dict[str, Any]:
    """Run the job through a bare aiohttp loop; return its counts."""
    with open(job["output"], "w", encoding="utf-8") as out:
        return asyncio.run(_bare(job, out))


async def _openai(job: Job, out: TextIO) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=job["base_url"], api_key=job["keys"][0]["key"])
    model = job.get("model", "sim-model")

    async def send(prompt: str) -> str | None:
        resp = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
        return resp.choices[0].message.content

    try:
        return await _drive(job, send, out)
    finally:
        await client.close()


def run_openai(job: Job) -> dict[str, Any]:
    """Run the job through openai.AsyncOpenAI under a semaphore; return its counts."""
    with open(job["output"], "w", encoding="utf-8") as out:
        return asyncio.run(_openai(job, out))


# ---------------------------------------------------------------------------------------------
# The seed


def run_seed(job: Job) -> dict[str, Any]:
    """Run the job through the seed's AsyncLLMAPI class; return its counts."""
    import seed_baseline

    saved = seed_baseline.run_job(job)
    return {"done": saved, "failed": 0}


CONTENDERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "squall": run_squall,
    "bare": run_bare,
    "openai": run_openai,
    "seed": run_seed,
}


def main(argv: list[str]) -> int:
    """Run the contender named in `argv` on the job read from stdin; print its report."""
    if len(argv) != 2 or argv[1] not in CONTENDERS:
        print(f"usage: python bench/clients.py {{{','.join(CONTENDERS)}}} < job.json")
        return 2
    name = argv[1]
    job = json.load(sys.stdin)
    # Import before the clock starts: the run is measured, not the interpreter's start.
    if name == "squall":
        import squall  # noqa: F401
    elif name == "bare":
        import aiohttp  # noqa: F401
    elif name == "openai":
        import openai  # noqa: F401
    else:
        import seed_baseline  # noqa: F401
    cpu0, t0 = _cpu(), time.perf_counter()
    report: dict[str, Any] = {"name": name}
    rc = 0
    try:
        report.update(CONTENDERS[name](job))
    except BaseException as e:  # the report must say how a contender died (the seed does)
        report["error"] = f"{type(e).__name__}: {e}"[:500]
        report["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
        rc = 1
    report["wall_s"] = time.perf_counter() - t0
    report["cpu_s"] = _cpu() - cpu0
    report["maxrss_mb"] = _maxrss_mb()
    print(json.dumps(report, ensure_ascii=False), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv))
