"""Base vs adapter on the seed's arithmetic set, on real engines on CPU, and what squall costs.

One command:

    python bench/eval.py -n 200                   # vLLM and LLaMA-Factory; -n 1000 is the seed's

For each engine it starts `squall serve` (the real command) on SmolLM2-135M with an arithmetic
LoRA adapter trained on the spot (tests/engines/model_cache.py: cached, shared with the engine
tests), then for the base and for the adapter, on the same N expressions:

  squall        `squall.evals.evaluate_arithmetic` with the endpoints block `serve` wrote, as a
                user gets it (limits undeclared: squall discovers them, starting at 600 rpm)
  squall-inf    the same with rpm = tpm = inf (no pacing at all; vLLM only: LLaMA-Factory
                works on 4 requests at once, and pacing cannot matter there)
  bare          a bare aiohttp loop: one session, a semaphore at the same concurrency, the same
                request bodies; the engine's own throughput with next to nothing around it

and reports accuracy (strict and lenient), requests/s, and the client's CPU seconds. The
engines need the venvs `.ci/run-engines` installs (SQUALL_VLLM_PYTHON and
SQUALL_LLAMAFACTORY_PYTHON override them). LLaMA-Factory merges the adapter and answers any
model name, so its base is served alone on a second server. Results go to
bench/out/eval/ (results.json, results.md, and each engine's eval report and chart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests" / "engines"))
sys.path.insert(0, str(ROOT / "src"))

from model_cache import Trained, prepare_model  # noqa: E402

from squall.config import RunConfig, load  # noqa: E402
from squall.evals import evaluate_arithmetic  # noqa: E402
from squall.evals.arithmetic import generate_items  # noqa: E402
from squall.evals.report import ArithmeticReport  # noqa: E402

KEY = "sk-bench-eval-000000000000"
ENGINES = ("vllm", "llamafactory")
VENVS = Path(
    os.environ.get("SQUALL_ENGINE_VENVS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "squall" / "engines"
)
SEED_YAML = """\
model_name_or_path: {base}
adapter_name_or_path: {adapter}/
template: smollm2
finetuning_type: lora
infer_backend: vllm
vllm_enforce_eager: true
"""


@dataclass
class Measure:
    """One contender's pass over the N expressions with one model."""

    engine: str
    model: str
    contender: str
    rows: int
    wall_s: float
    cpu_s: float
    errors: int
    concurrency: int
    strict: float | None = None
    lenient: float | None = None
    same_as_squall: int | None = None
    """Rows whose answer equals the `squall` contender's, word for word (greedy decoding)."""

    @property
    def rps(self) -> float:
        """Requests per second."""
        return self.rows / self.wall_s if self.wall_s > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# Engines


def engine_python(engine: str) -> str:
    """Return the Python of `engine`'s venv, or exit saying how to install it."""
    var = {"vllm": "SQUALL_VLLM_PYTHON", "llamafactory": "SQUALL_LLAMAFACTORY_PYTHON"}[engine]
    path = os.environ.get(var) or str(VENVS / engine / "bin" / "python")
    if not Path(path).is_file():
        sys.exit(f"{engine} is not installed at {path}: run .ci/run-engines once (or set {var})")
    return path


def squall_argv(*args: str) -> list[str]:
    """Return the argv of the real `squall ARGS` from this checkout."""
    script = Path(sys.executable).with_name("squall")
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", "squall", *args]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(args: list[str], work: Path, timeout_s: float = 900) -> Iterator[Path]:
    """Run `squall serve ARGS` in `work` until the block is written; yield it; then SIGTERM."""
    endpoints = work / f"endpoints-{len(list(work.glob('endpoints-*')))}.toml"
    log = (work / (endpoints.stem + ".serve.log")).open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1"}
    for var in ("SQUALL_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(var, None)
    env["API_KEY"] = KEY
    started = time.monotonic()
    proc = subprocess.Popen(
        squall_argv(*args, "--write-endpoints", str(endpoints)),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while not endpoints.exists():
            if proc.poll() is not None or time.monotonic() - started > timeout_s:
                tail = (work / (endpoints.stem + ".serve.log")).read_text()[-4000:]
                raise SystemExit(f"squall serve did not become ready:\n{tail}")
            time.sleep(0.5)
        print(f"  served in {time.monotonic() - started:.0f} s: {' '.join(args[:6])} ...")
        yield endpoints
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------------------------------
# Contenders


def squall_eval(
    engine: str,
    model: str,
    contender: str,
    cfg: RunConfig,
    out: Path,
    models: list[str],
    args: argparse.Namespace,
    *,
    chart: bool = True,
) -> Measure:
    """Run squall's arithmetic eval for the last of `models` into `out`; measure that model.

    Models before it in `models` are already answered in `out` (their journals), so they are
    only rescored: the report lists them all side by side. The client CPU time includes
    scoring and writing the report (and the chart, with `chart`).
    """
    cpu = time.process_time()
    result = evaluate_arithmetic(
        models,
        out_dir=out,
        config=cfg,
        n=args.n,
        operands=args.operands,
        seed=args.seed,
        progress="off",
        chart=chart,
    )
    cpu_s = time.process_time() - cpu
    run = next(r for r in result.runs if r.model == model)
    summary = run.result.summary
    assert isinstance(result.report, ArithmeticReport)
    report = next(m for m in result.report.models if m.model == model)
    ep = cfg.endpoints[0]
    return Measure(
        engine=engine,
        model=model,
        contender=contender,
        rows=summary.done_this_session,
        wall_s=summary.wall_s or math.nan,
        cpu_s=cpu_s,
        errors=run.failed,
        concurrency=ep.keys[0].max_concurrency or ep.max_concurrency,
        strict=report.overall.strict_accuracy,
        lenient=report.overall.lenient_accuracy,
    )


async def _bare(
    base_url: str, model: str, prompts: list[str], concurrency: int, max_tokens: int
) -> tuple[list[str | None], float]:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{base_url}/chat/completions"
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:

        async def one(prompt: str) -> str | None:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
            async with sem:
                try:
                    async with session.post(url, json=body) as resp:
                        if resp.status != 200:
                            await resp.read()
                            return None
                        data = await resp.json()
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    return None
            content = data["choices"][0]["message"]["content"]
            return content if isinstance(content, str) else ""

        started = time.perf_counter()
        answers = await asyncio.gather(*(one(p) for p in prompts))
        return list(answers), time.perf_counter() - started


def bare_loop(
    engine: str,
    model: str,
    cfg: RunConfig,
    prompts: list[str],
    squall_answers: list[str | None],
    concurrency: int,
    args: argparse.Namespace,
) -> Measure:
    """Send `prompts` with a bare aiohttp loop at `concurrency`; measure it."""
    cpu = time.process_time()
    answers, wall = asyncio.run(
        _bare(cfg.endpoints[0].base_url, model, prompts, concurrency, args.max_tokens)
    )
    return Measure(
        engine=engine,
        model=model,
        contender="bare",
        rows=len(prompts),
        wall_s=wall,
        cpu_s=time.process_time() - cpu,
        errors=sum(a is None for a in answers),
        concurrency=concurrency,
        same_as_squall=sum(a == s for a, s in zip(answers, squall_answers, strict=True)),
    )


def answers_of(out: Path, model: str) -> list[str | None]:
    """Return the responses in a model's scored file, in row order."""
    lines = (out / f"{model}.scored.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["response"] for line in lines if line]


def measure_model(
    engine: str,
    model: str,
    endpoints: Path,
    out: Path,
    models: list[str],
    prompts: list[str],
    args: argparse.Namespace,
) -> list[Measure]:
    """Return squall's, squall-inf's and the bare loop's measures for `model` on one server."""
    env = {**os.environ, "API_KEY": KEY}  # what the block's ${API_KEY} stands for
    served_cfg = load(endpoints, overrides={"max_tokens": args.max_tokens}, env=env)
    print(f"  {engine} {model}: squall ...", flush=True)
    first = squall_eval(engine, model, "squall", served_cfg, out, models, args)
    squall_answers = answers_of(out, model)
    print(f"  {engine} {model}: bare aiohttp loop at concurrency {first.concurrency} ...")
    bare = bare_loop(engine, model, served_cfg, prompts, squall_answers, first.concurrency, args)
    found = [first, bare]
    # LLaMA-Factory works on MAX_CONCURRENT requests at once: pacing cannot matter there.
    if not args.skip_inf and engine == "vllm":
        print(f"  {engine} {model}: squall with rpm = tpm = inf ...")
        inf_cfg = load(
            endpoints,
            overrides={"max_tokens": args.max_tokens, "rpm": math.inf, "tpm": math.inf},
            env=env,
        )
        inf_out = out.parent / f"{out.name}-inf-{model}"
        found.append(
            squall_eval(engine, model, "squall-inf", inf_cfg, inf_out, [model], args, chart=False)
        )
        found[-1].same_as_squall = sum(
            a == s for a, s in zip(answers_of(inf_out, model), squall_answers, strict=True)
        )
    return found


# ---------------------------------------------------------------------------------------------
# Engines end to end


def bench_vllm(
    trained: Trained, work: Path, prompts: list[str], args: argparse.Namespace
) -> list[Measure]:
    """Serve base + adapter on vLLM (CPU) from the seed's YAML; measure both models."""
    py = engine_python("vllm")
    (work / "arith").symlink_to(trained.arith, target_is_directory=True)
    (work / "vllm_api.yaml").write_text(SEED_YAML.format(base=trained.base, adapter=work / "arith"))
    serve = [
        "serve", "vllm_api.yaml", "--engine", "vllm", "--python", py,
        "--port", str(free_port()), "--engine-arg=--max-model-len", "--engine-arg=1024",
    ]  # fmt: skip
    out = work / "eval"
    found: list[Measure] = []
    with served(serve, work) as endpoints:
        found += measure_model("vllm", "base", endpoints, out, ["base"], prompts, args)
        found += measure_model("vllm", "arith", endpoints, out, ["base", "arith"], prompts, args)
    return found


def bench_llamafactory(
    trained: Trained, work: Path, prompts: list[str], args: argparse.Namespace
) -> list[Measure]:
    """Serve the merged adapter, then the base alone, on LLaMA-Factory; measure both."""
    py = engine_python("llamafactory")
    (work / "arith").symlink_to(trained.arith, target_is_directory=True)
    (work / "vllm_api.yaml").write_text(SEED_YAML.format(base=trained.base, adapter=work / "arith"))
    common = ["--python", py, "--max-concurrent", str(args.lf_concurrency)]
    out = work / "eval"
    found: list[Measure] = []
    base = [
        "serve", "--model", str(trained.base), "--engine", "llamafactory",
        "--template", "smollm2", "--port", str(free_port()), *common,
    ]  # fmt: skip
    with served(base, work) as endpoints:
        found += measure_model("llamafactory", "base", endpoints, out, ["base"], prompts, args)
    adapter = [
        "serve", "vllm_api.yaml", "--infer-backend", "huggingface",
        "--port", str(free_port()), *common,
    ]  # fmt: skip
    with served(adapter, work) as endpoints:
        found += measure_model(
            "llamafactory", "arith", endpoints, out, ["base", "arith"], prompts, args
        )
    return found


# ---------------------------------------------------------------------------------------------
# Reporting


def _pct(x: float | None) -> str:
    return "" if x is None else f"{x * 100:.1f}%"


def tables(found: list[Measure]) -> str:
    """Return the results as Markdown: accuracy, then throughput with squall's overhead."""
    lines = [
        "| engine | model | strict | lenient |",
        "|---|---|---:|---:|",
    ]
    for m in found:
        if m.contender == "squall":
            lines.append(f"| {m.engine} | {m.model} | {_pct(m.strict)} | {_pct(m.lenient)} |")
    lines += [
        "",
        "| engine | model | contender | concurrency | rows | errors | wall s | req/s "
        "| vs bare | client CPU s | same answers as squall |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    bare = {(m.engine, m.model): m for m in found if m.contender == "bare"}
    for m in found:
        ref = bare.get((m.engine, m.model))
        ratio = f"{m.rps / ref.rps:.2f}x" if ref is not None and ref.rps else ""
        same = "" if m.same_as_squall is None else f"{m.same_as_squall}/{m.rows}"
        lines.append(
            f"| {m.engine} | {m.model} | {m.contender} | {m.concurrency} | {m.rows} | "
            f"{m.errors} | {m.wall_s:.1f} | {m.rps:.2f} | {ratio} | {m.cpu_s:.2f} | {same} |"
        )
    return "\n".join(lines) + "\n"


def machine_note() -> str:
    """Return one line: cores, CPU, load at start, Python."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1, load5, _ = os.getloadavg()
    return (
        f"{os.cpu_count()} cores ({cpu}), load {load1:.2f}/{load5:.2f} at start, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark the command line asks for; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=1000, help="expressions (the seed sends 1000)")
    ap.add_argument("--operands", type=int, default=3, help="numbers per expression (seed: 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60, help="adapter training steps")
    ap.add_argument("--engines", default=",".join(ENGINES), help="vllm,llamafactory")
    ap.add_argument("--lf-concurrency", type=int, default=4, help="LLaMA-Factory MAX_CONCURRENT")
    ap.add_argument("--skip-inf", action="store_true", help="skip the rpm = tpm = inf pass")
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "eval")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()  # squall serve runs inside it: paths must not be relative
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    pythons = {e: engine_python(e) for e in ENGINES}  # LLaMA-Factory's venv also trains
    # Imports happen once, before any measure: the first pass must not pay for them.
    import matplotlib

    matplotlib.use("Agg", force=True)  # as squall's chart does
    import matplotlib.pyplot

    import squall.api  # noqa: F401

    note = machine_note()
    print(note)
    started = time.monotonic()
    trained = prepare_model(
        pythons["llamafactory"], VENVS / "models", steps=args.steps, say=lambda s: print(f"  {s}")
    )
    items = generate_items(args.n, operands=args.operands, seed=args.seed)
    prompts = [item.expression for item in items]  # the default template: the bare expression
    shutil.rmtree(args.out, ignore_errors=True)
    found: list[Measure] = []
    for engine in engines:
        work = args.out / engine
        work.mkdir(parents=True)
        print(f"{engine}:")
        bench = bench_vllm if engine == "vllm" else bench_llamafactory
        found += bench(trained, work, prompts, args)
    took = time.monotonic() - started
    header = (
        f"`python bench/eval.py {' '.join(argv if argv is not None else sys.argv[1:])}`: "
        f"n={args.n}, operands={args.operands}, seed={args.seed}, max_tokens={args.max_tokens}, "
        f"adapter {trained.steps} steps; {note}; took {took:.0f} s\n\n"
    )
    text = header + tables(found)
    (args.out / "results.md").write_text(text, encoding="utf-8")
    (args.out / "results.json").write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "machine": note,
             "took_s": took, "model": trained.log, "results": [asdict(m) for m in found]},
            indent=2,
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    print(text)
    print(f"wrote {args.out / 'results.md'}, results.json and each engine's eval/ report")
    return 0


if __name__ == "__main__":
    sys.exit(main())
